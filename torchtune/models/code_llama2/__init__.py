"""Code Llama: Llama 2's architecture at Code Llama's sizes (tokenizer: ``llama2_tokenizer``;
checkpoints: ``model_type: LLAMA2``)."""

from torchtune.models.code_llama2._model_builders import (
    code_llama2_13b,
    code_llama2_70b,
    code_llama2_7b,
    lora_code_llama2_13b,
    lora_code_llama2_70b,
    lora_code_llama2_7b,
    qlora_code_llama2_13b,
    qlora_code_llama2_70b,
    qlora_code_llama2_7b,
)

__all__ = [
    "code_llama2_13b",
    "code_llama2_70b",
    "code_llama2_7b",
    "lora_code_llama2_13b",
    "lora_code_llama2_70b",
    "lora_code_llama2_7b",
    "qlora_code_llama2_13b",
    "qlora_code_llama2_70b",
    "qlora_code_llama2_7b",
]
