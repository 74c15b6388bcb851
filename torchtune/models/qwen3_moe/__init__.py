"""Qwen 3 MoE: Qwen 3's decoder with mixture-of-experts MLPs (``torchtune.modules.moe``).
Its tokenizer is Qwen 3's (``torchtune.models.qwen3.qwen3_tokenizer``)."""

from torchtune.models.qwen3_moe._component_builders import lora_qwen3_moe, qwen3_moe
from torchtune.models.qwen3_moe._model_builders import (
    lora_qwen3_moe_235b_a22b,
    lora_qwen3_moe_30b_a3b,
    qlora_qwen3_moe_235b_a22b,
    qlora_qwen3_moe_30b_a3b,
    qwen3_moe_235b_a22b,
    qwen3_moe_30b_a3b,
)

__all__ = [
    "lora_qwen3_moe",
    "lora_qwen3_moe_235b_a22b",
    "lora_qwen3_moe_30b_a3b",
    "qlora_qwen3_moe_235b_a22b",
    "qlora_qwen3_moe_30b_a3b",
    "qwen3_moe",
    "qwen3_moe_235b_a22b",
    "qwen3_moe_30b_a3b",
]
