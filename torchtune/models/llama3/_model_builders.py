"""Model builders: Llama 3 at the published sizes (meta-llama/llama3 ``params.json``)."""

from typing import List

from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3._component_builders import llama3, lora_llama3
from torchtune.modules import TransformerDecoder

# One dict per size, shared by the base and the LoRA builder so they cannot drift apart.
_LLAMA3_8B = dict(
    vocab_size=128_256,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=4096,
    max_seq_len=8192,
    intermediate_dim=14336,
    attn_dropout=0.0,
    norm_eps=1e-5,
    rope_base=500_000,
)
_LLAMA3_70B = dict(
    _LLAMA3_8B, num_layers=80, num_heads=64, embed_dim=8192, intermediate_dim=28672
)


def llama3_8b() -> TransformerDecoder:
    """Llama 3 8B: 32 layers, 32 heads / 8 kv heads, d=4096, hidden 14336, 8K context."""
    return llama3(**_LLAMA3_8B)


def llama3_70b() -> TransformerDecoder:
    """Llama 3 70B: 80 layers, 64 heads / 8 kv heads, d=8192, hidden 28672, 8K context."""
    return llama3(**_LLAMA3_70B)


def lora_llama3_8b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Llama 3 8B with LoRA adapters; arguments as in ``lora_llama3``."""
    return lora_llama3(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_LLAMA3_8B,
    )


def lora_llama3_70b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Llama 3 70B with LoRA adapters; arguments as in ``lora_llama3``."""
    return lora_llama3(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_LLAMA3_70B,
    )

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_8b = qlora_builder(lora_llama3_8b)
qlora_llama3_70b = qlora_builder(lora_llama3_70b)
