"""Model builders: the Qwen 3 dense models at the published sizes (Qwen/Qwen3-*
``config.json``: head_dim 128 whatever d / n_h is, per-head q/k RMSNorm, no biases, RoPE
base 1e6, RMSNorm eps 1e-6, 40,960 positions; 0.6B-4B tie the output to the embedding).

The LoRA builders of tied sizes have no ``apply_lora_to_output`` argument."""

from typing import List

from torchtune.models._qlora import qlora_builder
from torchtune.models.qwen3._component_builders import lora_qwen3, qwen3
from torchtune.modules import TransformerDecoder

# One dict per size, shared by the base and the LoRA builders so they cannot drift apart.
_QWEN3_0_6B = dict(
    vocab_size=151_936,
    num_layers=28,
    num_heads=16,
    num_kv_heads=8,
    embed_dim=1_024,
    intermediate_dim=3_072,
    head_dim=128,
    max_seq_len=40_960,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=True,
)
_QWEN3_1_7B = dict(
    vocab_size=151_936,
    num_layers=28,
    num_heads=16,
    num_kv_heads=8,
    embed_dim=2_048,
    intermediate_dim=6_144,
    head_dim=128,
    max_seq_len=40_960,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=True,
)
_QWEN3_4B = dict(
    vocab_size=151_936,
    num_layers=36,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=2_560,
    intermediate_dim=9_728,
    head_dim=128,
    max_seq_len=40_960,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=True,
)
_QWEN3_8B = dict(
    vocab_size=151_936,
    num_layers=36,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=4_096,
    intermediate_dim=12_288,
    head_dim=128,
    max_seq_len=40_960,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)
_QWEN3_14B = dict(
    vocab_size=151_936,
    num_layers=40,
    num_heads=40,
    num_kv_heads=8,
    embed_dim=5_120,
    intermediate_dim=17_408,
    head_dim=128,
    max_seq_len=40_960,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)
_QWEN3_32B = dict(
    vocab_size=151_936,
    num_layers=64,
    num_heads=64,
    num_kv_heads=8,
    embed_dim=5_120,
    intermediate_dim=25_600,
    head_dim=128,
    max_seq_len=40_960,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)


def qwen3_0_6b() -> TransformerDecoder:
    """Qwen 3 0.6B: 28 layers, 16 heads / 8 kv heads, d=1024, head_dim 128, hidden 3072, vocab
    151936, tied output."""
    return qwen3(**_QWEN3_0_6B)


def lora_qwen3_0_6b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 3 0.6B with LoRA adapters; arguments as in ``lora_qwen3``. The output
    projection is tied to the embedding and takes no adapter."""
    return lora_qwen3(
        lora_attn_modules,
        apply_lora_to_mlp,
        False,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN3_0_6B,
    )


def qwen3_1_7b() -> TransformerDecoder:
    """Qwen 3 1.7B: 28 layers, 16 heads / 8 kv heads, d=2048, head_dim 128, hidden 6144, vocab
    151936, tied output."""
    return qwen3(**_QWEN3_1_7B)


def lora_qwen3_1_7b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 3 1.7B with LoRA adapters; arguments as in ``lora_qwen3``. The output
    projection is tied to the embedding and takes no adapter."""
    return lora_qwen3(
        lora_attn_modules,
        apply_lora_to_mlp,
        False,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN3_1_7B,
    )


def qwen3_4b() -> TransformerDecoder:
    """Qwen 3 4B: 36 layers, 32 heads / 8 kv heads, d=2560, head_dim 128, hidden 9728, vocab
    151936, tied output."""
    return qwen3(**_QWEN3_4B)


def lora_qwen3_4b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 3 4B with LoRA adapters; arguments as in ``lora_qwen3``. The output
    projection is tied to the embedding and takes no adapter."""
    return lora_qwen3(
        lora_attn_modules,
        apply_lora_to_mlp,
        False,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN3_4B,
    )


def qwen3_8b() -> TransformerDecoder:
    """Qwen 3 8B: 36 layers, 32 heads / 8 kv heads, d=4096, head_dim 128, hidden 12288, vocab
    151936, untied output."""
    return qwen3(**_QWEN3_8B)


def lora_qwen3_8b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 3 8B with LoRA adapters; arguments as in ``lora_qwen3``."""
    return lora_qwen3(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN3_8B,
    )


def qwen3_14b() -> TransformerDecoder:
    """Qwen 3 14B: 40 layers, 40 heads / 8 kv heads, d=5120, head_dim 128, hidden 17408, vocab
    151936, untied output."""
    return qwen3(**_QWEN3_14B)


def lora_qwen3_14b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 3 14B with LoRA adapters; arguments as in ``lora_qwen3``."""
    return lora_qwen3(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN3_14B,
    )


def qwen3_32b() -> TransformerDecoder:
    """Qwen 3 32B: 64 layers, 64 heads / 8 kv heads, d=5120, head_dim 128, hidden 25600, vocab
    151936, untied output."""
    return qwen3(**_QWEN3_32B)


def lora_qwen3_32b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Qwen 3 32B with LoRA adapters; arguments as in ``lora_qwen3``."""
    return lora_qwen3(
        lora_attn_modules,
        apply_lora_to_mlp,
        apply_lora_to_output,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
        **_QWEN3_32B,
    )

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_qwen3_0_6b = qlora_builder(lora_qwen3_0_6b)
qlora_qwen3_1_7b = qlora_builder(lora_qwen3_1_7b)
qlora_qwen3_4b = qlora_builder(lora_qwen3_4b)
qlora_qwen3_8b = qlora_builder(lora_qwen3_8b)
qlora_qwen3_14b = qlora_builder(lora_qwen3_14b)
qlora_qwen3_32b = qlora_builder(lora_qwen3_32b)
