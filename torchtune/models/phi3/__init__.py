"""Phi-3: component builders, Phi-3 mini, and the key maps of its fused projections."""

from torchtune.models.phi3._component_builders import lora_phi3, phi3
from torchtune.models.phi3._convert_weights import phi3_hf_to_tune, phi3_tune_to_hf
from torchtune.models.phi3._model_builders import lora_phi3_mini, phi3_mini, qlora_phi3_mini

__all__ = [
    "lora_phi3",
    "lora_phi3_mini",
    "phi3",
    "phi3_hf_to_tune",
    "phi3_mini",
    "phi3_tune_to_hf",
    "qlora_phi3_mini",
]
