"""Gemma 3 (Google, 2025), text decoder: Gemma 2's layout without soft-caps, with q/k
norms, five sliding layers to each global one and two RoPE bases."""

from torchtune.models.gemma3._component_builders import gemma3, lora_gemma3
from torchtune.models.gemma3._model_builders import (
    gemma3_12b,
    gemma3_1b,
    gemma3_270m,
    gemma3_27b,
    gemma3_4b,
    lora_gemma3_12b,
    lora_gemma3_1b,
    lora_gemma3_270m,
    lora_gemma3_27b,
    lora_gemma3_4b,
    qlora_gemma3_12b,
    qlora_gemma3_1b,
    qlora_gemma3_270m,
    qlora_gemma3_27b,
    qlora_gemma3_4b,
)
from torchtune.models.gemma3._tokenizer import GEMMA3_CHAT_TEMPLATE, gemma3_tokenizer

__all__ = [
    "GEMMA3_CHAT_TEMPLATE",
    "gemma3_tokenizer",
    "gemma3",
    "gemma3_270m",
    "gemma3_1b",
    "gemma3_4b",
    "gemma3_12b",
    "gemma3_27b",
    "lora_gemma3",
    "lora_gemma3_270m",
    "lora_gemma3_1b",
    "lora_gemma3_4b",
    "lora_gemma3_12b",
    "lora_gemma3_27b",
    "qlora_gemma3_270m",
    "qlora_gemma3_1b",
    "qlora_gemma3_4b",
    "qlora_gemma3_12b",
    "qlora_gemma3_27b",
]
