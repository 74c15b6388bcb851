"""Model builders: the Llama 3.2 text models at the published sizes (meta-llama/llama-models
``sku_list``: 128K context, RoPE scale factor 32, output tied to the embedding)."""

from typing import List

from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3_2._component_builders import llama3_2, lora_llama3_2
from torchtune.modules import TransformerDecoder

# One dict per size, shared by the base and the LoRA builder so they cannot drift apart.
_LLAMA3_2_1B = dict(
    vocab_size=128_256,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=2048,
    max_seq_len=131_072,
    intermediate_dim=8192,
    attn_dropout=0.0,
    norm_eps=1e-5,
    rope_base=500_000,
    scale_factor=32,
    tie_word_embeddings=True,
)
_LLAMA3_2_3B = dict(_LLAMA3_2_1B, num_layers=28, num_heads=24, embed_dim=3072)


def llama3_2_1b() -> TransformerDecoder:
    """Llama 3.2 1B: 16 layers, 32 heads / 8 kv heads, d=2048, hidden 8192, tied output;
    1,235,814,400 parameters."""
    return llama3_2(**_LLAMA3_2_1B)


def llama3_2_3b() -> TransformerDecoder:
    """Llama 3.2 3B: 28 layers, 24 heads / 8 kv heads, d=3072, hidden 8192, tied output;
    3,212,749,824 parameters."""
    return llama3_2(**_LLAMA3_2_3B)


def lora_llama3_2_1b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Llama 3.2 1B with LoRA adapters; arguments as in ``lora_llama3_2`` (the tied output
    takes no adapter: ``apply_lora_to_output=True`` raises)."""
    return lora_llama3_2(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_LLAMA3_2_1B,
    )


def lora_llama3_2_3b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Llama 3.2 3B with LoRA adapters; arguments as in ``lora_llama3_2`` (the tied output
    takes no adapter: ``apply_lora_to_output=True`` raises)."""
    return lora_llama3_2(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_LLAMA3_2_3B,
    )

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_2_1b = qlora_builder(lora_llama3_2_1b)
qlora_llama3_2_3b = qlora_builder(lora_llama3_2_3b)
