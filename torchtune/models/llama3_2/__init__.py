"""Llama 3.2 text models: Llama 3.1 with RoPE scale factor 32 and a tied output projection."""

from torchtune.models.llama3_2._component_builders import llama3_2, lora_llama3_2
from torchtune.models.llama3_2._model_builders import (
    llama3_2_1b,
    llama3_2_3b,
    lora_llama3_2_1b,
    lora_llama3_2_3b,
    qlora_llama3_2_1b,
    qlora_llama3_2_3b,
)

__all__ = [
    "llama3_2",
    "llama3_2_1b",
    "llama3_2_3b",
    "lora_llama3_2",
    "lora_llama3_2_1b",
    "lora_llama3_2_3b",
    "qlora_llama3_2_1b",
    "qlora_llama3_2_3b",
]
