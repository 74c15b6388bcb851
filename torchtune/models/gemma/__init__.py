"""Gemma (Google, 2024): the shared decoder with Gemma's options (``sqrt(d)`` embedding
scale, ``1 + w`` RMSNorm, GeGLU, head_dim 256, tied output)."""

from torchtune.models.gemma._component_builders import gemma, lora_gemma
from torchtune.models.gemma._model_builders import (
    gemma_2b,
    gemma_7b,
    lora_gemma_2b,
    lora_gemma_7b,
    qlora_gemma_2b,
    qlora_gemma_7b,
)
from torchtune.models.gemma._tokenizer import GEMMA_CHAT_TEMPLATE, gemma_tokenizer

__all__ = [
    "GEMMA_CHAT_TEMPLATE",
    "gemma_tokenizer",
    "gemma",
    "gemma_2b",
    "gemma_7b",
    "lora_gemma",
    "lora_gemma_2b",
    "lora_gemma_7b",
    "qlora_gemma_2b",
    "qlora_gemma_7b",
]
