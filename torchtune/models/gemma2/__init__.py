"""Gemma 2 (Google, 2024): Gemma with sandwich norms, attention and final-logit soft-caps
and a sliding window on every other layer. Its tokenizer is Gemma's
(``torchtune.models.gemma.gemma_tokenizer``)."""

from torchtune.models.gemma2._component_builders import gemma2, lora_gemma2
from torchtune.models.gemma2._model_builders import (
    gemma2_27b,
    gemma2_2b,
    gemma2_9b,
    lora_gemma2_27b,
    lora_gemma2_2b,
    lora_gemma2_9b,
    qlora_gemma2_27b,
    qlora_gemma2_2b,
    qlora_gemma2_9b,
)
# Gemma 2's tokenizer is Gemma's; 0.6.1 exported it here too.
from torchtune.models.gemma._tokenizer import gemma_tokenizer

__all__ = [
    "gemma_tokenizer",
    "gemma2",
    "gemma2_2b",
    "gemma2_9b",
    "gemma2_27b",
    "lora_gemma2",
    "lora_gemma2_2b",
    "lora_gemma2_9b",
    "lora_gemma2_27b",
    "qlora_gemma2_2b",
    "qlora_gemma2_9b",
    "qlora_gemma2_27b",
]
