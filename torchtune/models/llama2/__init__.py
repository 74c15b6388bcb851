"""Llama 2: component builders, model builders at the published sizes, tokenizer builder."""

from torchtune.models.llama2._component_builders import (
    llama2,
    lora_llama2,
    scale_hidden_dim_for_mlp,
)
from torchtune.models.llama2._model_builders import (
    llama2_13b,
    llama2_70b,
    llama2_7b,
    lora_llama2_13b,
    lora_llama2_70b,
    lora_llama2_7b,
    qlora_llama2_13b,
    qlora_llama2_70b,
    qlora_llama2_7b,
)
from torchtune.models.llama2._tokenizer import llama2_tokenizer

__all__ = [
    "llama2",
    "llama2_7b",
    "llama2_13b",
    "llama2_70b",
    "llama2_tokenizer",
    "lora_llama2",
    "lora_llama2_7b",
    "lora_llama2_13b",
    "lora_llama2_70b",
    "scale_hidden_dim_for_mlp",
    "qlora_llama2_7b",
    "qlora_llama2_13b",
    "qlora_llama2_70b",
]
