"""Phi-3: component builders, Phi-3 mini, the key maps of its fused projections, the
tokenizer, and 0.6.1's rotate-half RoPE module."""

from torchtune.models.phi3._component_builders import lora_phi3, phi3
from torchtune.models.phi3._convert_weights import phi3_hf_to_tune, phi3_tune_to_hf
from torchtune.models.phi3._model_builders import lora_phi3_mini, phi3_mini, qlora_phi3_mini
from torchtune.models.phi3._position_embeddings import Phi3RotaryPositionalEmbeddings
from torchtune.models.phi3._tokenizer import (
    PHI3_CHAT_TEMPLATE,
    PHI3_SPECIAL_TOKENS,
    phi3_mini_tokenizer,
)

__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "PHI3_SPECIAL_TOKENS",
    "Phi3RotaryPositionalEmbeddings",
    "lora_phi3",
    "lora_phi3_mini",
    "phi3",
    "phi3_hf_to_tune",
    "phi3_mini",
    "phi3_mini_tokenizer",
    "phi3_tune_to_hf",
    "qlora_phi3_mini",
]
