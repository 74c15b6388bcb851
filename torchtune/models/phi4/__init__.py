"""Phi-4: the 14B model on Phi-3's architecture (``torchtune.models.phi3``), key maps included."""

from torchtune.models.phi4._model_builders import lora_phi4_14b, phi4_14b, qlora_phi4_14b

__all__ = ["lora_phi4_14b", "phi4_14b", "qlora_phi4_14b"]
