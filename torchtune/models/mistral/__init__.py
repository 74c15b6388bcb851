"""Mistral: component builders, Mistral 7B and its reward model, tokenizer builder."""

from torchtune.models.mistral._component_builders import (
    lora_mistral,
    lora_mistral_classifier,
    mistral,
    mistral_classifier,
)
from torchtune.models.mistral._model_builders import (
    lora_mistral_7b,
    lora_mistral_reward_7b,
    mistral_7b,
    mistral_reward_7b,
    qlora_mistral_7b,
    qlora_mistral_reward_7b,
)
from torchtune.models.mistral._tokenizer import mistral_tokenizer, MistralTokenizer
from torchtune.tokenizers._prompt_template import MistralChatTemplate

__all__ = [
    "MistralTokenizer",
    "MistralChatTemplate",
    "lora_mistral",
    "lora_mistral_classifier",
    "mistral",
    "mistral_classifier",
    "lora_mistral_7b",
    "lora_mistral_reward_7b",
    "mistral_7b",
    "mistral_reward_7b",
    "mistral_tokenizer",
    "qlora_mistral_7b",
    "qlora_mistral_reward_7b",
]
