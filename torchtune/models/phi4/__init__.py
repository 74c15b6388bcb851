"""Phi-4: the 14B model on Phi-3's architecture (``torchtune.models.phi3``), key maps
included, and its tokenizer."""

from torchtune.models.phi4._model_builders import lora_phi4_14b, phi4_14b, qlora_phi4_14b
from torchtune.models.phi4._tokenizer import phi4_tokenizer, PHI4_CHAT_TEMPLATE, PHI4_SPECIAL_TOKENS

__all__ = [
    "PHI4_CHAT_TEMPLATE",
    "PHI4_SPECIAL_TOKENS",
    "lora_phi4_14b",
    "phi4_14b",
    "phi4_tokenizer",
    "qlora_phi4_14b",
]
