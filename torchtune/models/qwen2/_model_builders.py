"""Model builders: the Qwen 2 models at the published sizes (Qwen/Qwen2-*-Instruct
``config.json``, as in torchtune 0.6.1: RoPE base 1e6, RMSNorm eps 1e-6, q/k/v biases, 32K
context; 0.5B and 1.5B tie the output to the embedding).

The LoRA builders of tied sizes have no ``apply_lora_to_output`` argument (0.6.1's
signatures)."""

from typing import List

from torchtune.models._qlora import qlora_builder
from torchtune.models.qwen2._component_builders import lora_qwen2, qwen2
from torchtune.modules import TransformerDecoder

# One dict per size, shared by the base and the LoRA builders so they cannot drift apart.
_QWEN2_0_5B = dict(
    vocab_size=151_936,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    embed_dim=896,
    intermediate_dim=4_864,
    max_seq_len=32_768,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=True,
)
_QWEN2_1_5B = dict(
    _QWEN2_0_5B, num_layers=28, num_heads=12, embed_dim=1_536, intermediate_dim=8_960
)
_QWEN2_7B = dict(
    _QWEN2_0_5B,
    vocab_size=152_064,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    embed_dim=3_584,
    intermediate_dim=18_944,
    tie_word_embeddings=False,
)


def qwen2_0_5b() -> TransformerDecoder:
    """Qwen 2 0.5B: 24 layers, 14 heads / 2 kv heads, d=896, hidden 4864, vocab 151936, tied
    output."""
    return qwen2(**_QWEN2_0_5B)


def qwen2_1_5b() -> TransformerDecoder:
    """Qwen 2 1.5B: 28 layers, 12 heads / 2 kv heads, d=1536, hidden 8960, vocab 151936, tied
    output."""
    return qwen2(**_QWEN2_1_5B)


def qwen2_7b() -> TransformerDecoder:
    """Qwen 2 7B: 28 layers, 28 heads / 4 kv heads, d=3584, hidden 18944, vocab 152064, untied
    output."""
    return qwen2(**_QWEN2_7B)


def lora_qwen2_0_5b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 2 0.5B with LoRA adapters; arguments as in ``lora_qwen2``. The output projection
    is tied to the embedding and takes no adapter."""
    return lora_qwen2(
        lora_attn_modules,
        apply_lora_to_mlp,
        False,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN2_0_5B,
    )


def lora_qwen2_1_5b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 2 1.5B with LoRA adapters; arguments as in ``lora_qwen2``. The output projection
    is tied to the embedding and takes no adapter."""
    return lora_qwen2(
        lora_attn_modules,
        apply_lora_to_mlp,
        False,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN2_1_5B,
    )


def lora_qwen2_7b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 2 7B with LoRA adapters; arguments as in ``lora_qwen2``."""
    return lora_qwen2(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN2_7B,
    )


# QLoRA: the LoRA builders with NF4 base weights.
qlora_qwen2_0_5b = qlora_builder(lora_qwen2_0_5b)
qlora_qwen2_1_5b = qlora_builder(lora_qwen2_1_5b)
qlora_qwen2_7b = qlora_builder(lora_qwen2_7b)
