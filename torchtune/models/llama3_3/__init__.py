"""Llama 3.3: Llama 3.1 70B's architecture (builders reuse ``torchtune.models.llama3_1``)."""

from torchtune.models.llama3_3._model_builders import (
    llama3_3_70b,
    lora_llama3_3_70b,
    qlora_llama3_3_70b,
)

__all__ = [
    "llama3_3_70b",
    "lora_llama3_3_70b",
    "qlora_llama3_3_70b",
]
