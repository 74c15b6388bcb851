"""Model builders: Llama 3.3 70B, which has Llama 3.1 70B's architecture and sizes (only
the weights differ)."""

from typing import List

from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3_1 import llama3_1_70b, lora_llama3_1_70b
from torchtune.modules import TransformerDecoder


def llama3_3_70b() -> TransformerDecoder:
    """Llama 3.3 70B: Llama 3.1 70B's decoder (80 layers, 64 heads / 8 kv heads, d=8192,
    hidden 28672, RoPE scale factor 8); 70,553,706,496 parameters."""
    return llama3_1_70b()


def lora_llama3_3_70b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Llama 3.3 70B with LoRA adapters; arguments as in ``lora_llama3_1``."""
    return lora_llama3_1_70b(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
    )

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_3_70b = qlora_builder(lora_llama3_3_70b)
