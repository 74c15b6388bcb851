"""Parameter-efficient fine-tuning: LoRA and adapter helpers."""

from torchtune.modules.peft.lora import LoRALinear
from torchtune.modules.peft.peft_utils import (
    AdapterModule,
    get_adapter_params,
    get_lora_module_names,
    get_merged_lora_ckpt,
    initialize_dora_magnitudes,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)

__all__ = [
    "AdapterModule",
    "LoRALinear",
    "get_adapter_params",
    "get_lora_module_names",
    "get_merged_lora_ckpt",
    "initialize_dora_magnitudes",
    "set_trainable_params",
    "validate_missing_and_unexpected_for_lora",
]
