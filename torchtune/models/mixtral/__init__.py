"""Mixtral: Mistral's decoder with a mixture-of-experts MLP in every layer
(``torchtune.modules.moe``). Its tokenizer is Mistral's
(``torchtune.models.mistral.mistral_tokenizer``)."""

from torchtune.models.mixtral._component_builders import lora_mixtral, mixtral
from torchtune.models.mixtral._model_builders import (
    lora_mixtral_8x7b,
    mixtral_8x7b,
    qlora_mixtral_8x7b,
)

__all__ = ["lora_mixtral", "lora_mixtral_8x7b", "mixtral", "mixtral_8x7b", "qlora_mixtral_8x7b"]
