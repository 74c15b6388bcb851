"""Qwen 3 (dense): the Llama decoder with per-head q/k RMSNorm and head_dim 128."""

from torchtune.models.qwen3._component_builders import lora_qwen3, qwen3
from torchtune.models.qwen3._model_builders import (
    lora_qwen3_0_6b,
    lora_qwen3_14b,
    lora_qwen3_1_7b,
    lora_qwen3_32b,
    lora_qwen3_4b,
    lora_qwen3_8b,
    qlora_qwen3_0_6b,
    qlora_qwen3_14b,
    qlora_qwen3_1_7b,
    qlora_qwen3_32b,
    qlora_qwen3_4b,
    qlora_qwen3_8b,
    qwen3_0_6b,
    qwen3_14b,
    qwen3_1_7b,
    qwen3_32b,
    qwen3_4b,
    qwen3_8b,
)
from torchtune.models.qwen3._tokenizer import qwen3_tokenizer

__all__ = [
    "lora_qwen3",
    "lora_qwen3_0_6b",
    "lora_qwen3_14b",
    "lora_qwen3_1_7b",
    "lora_qwen3_32b",
    "lora_qwen3_4b",
    "lora_qwen3_8b",
    "qwen3",
    "qwen3_0_6b",
    "qwen3_14b",
    "qwen3_1_7b",
    "qwen3_32b",
    "qwen3_4b",
    "qwen3_8b",
    "qwen3_tokenizer",
    "qlora_qwen3_0_6b",
    "qlora_qwen3_1_7b",
    "qlora_qwen3_4b",
    "qlora_qwen3_8b",
    "qlora_qwen3_14b",
    "qlora_qwen3_32b",
]
