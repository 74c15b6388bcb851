"""Qwen 2: the Llama decoder with q/k/v biases, RoPE base 1e6 and an optional tied output."""

from torchtune.models.qwen2._component_builders import lora_qwen2, qwen2
from torchtune.models.qwen2._model_builders import (
    lora_qwen2_0_5b,
    lora_qwen2_1_5b,
    lora_qwen2_7b,
    qlora_qwen2_0_5b,
    qlora_qwen2_1_5b,
    qlora_qwen2_7b,
    qwen2_0_5b,
    qwen2_1_5b,
    qwen2_7b,
)
from torchtune.models.qwen2._tokenizer import qwen2_tokenizer

__all__ = [
    "lora_qwen2",
    "lora_qwen2_0_5b",
    "lora_qwen2_1_5b",
    "lora_qwen2_7b",
    "qlora_qwen2_0_5b",
    "qlora_qwen2_1_5b",
    "qlora_qwen2_7b",
    "qwen2",
    "qwen2_0_5b",
    "qwen2_1_5b",
    "qwen2_7b",
    "qwen2_tokenizer",
]
