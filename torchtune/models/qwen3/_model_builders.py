"""Model builders: the Qwen 3 dense models at the published sizes (Qwen/Qwen3-*
``config.json``: head_dim 128 whatever d / n_h is, per-head q/k RMSNorm, no biases, RoPE
base 1e6, RMSNorm eps 1e-6, 40,960 positions; 0.6B-4B tie the output to the embedding).

The LoRA builders of tied sizes have no ``apply_lora_to_output`` argument."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.qwen3._component_builders import qwen3

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


@decoder_builder
def qwen3_0_6b() -> DecoderDescription:
    """Qwen 3 0.6B: 28 layers, 16 heads / 8 kv heads, d=1024, head_dim 128, hidden 3072, vocab
    151936, tied output."""
    return qwen3.describe(**_QWEN3_0_6B)


@decoder_builder
def qwen3_1_7b() -> DecoderDescription:
    """Qwen 3 1.7B: 28 layers, 16 heads / 8 kv heads, d=2048, head_dim 128, hidden 6144, vocab
    151936, tied output."""
    return qwen3.describe(**_QWEN3_1_7B)


@decoder_builder
def qwen3_4b() -> DecoderDescription:
    """Qwen 3 4B: 36 layers, 32 heads / 8 kv heads, d=2560, head_dim 128, hidden 9728, vocab
    151936, tied output."""
    return qwen3.describe(**_QWEN3_4B)


@decoder_builder
def qwen3_8b() -> DecoderDescription:
    """Qwen 3 8B: 36 layers, 32 heads / 8 kv heads, d=4096, head_dim 128, hidden 12288, vocab
    151936, untied output."""
    return qwen3.describe(**_QWEN3_8B)


@decoder_builder
def qwen3_14b() -> DecoderDescription:
    """Qwen 3 14B: 40 layers, 40 heads / 8 kv heads, d=5120, head_dim 128, hidden 17408, vocab
    151936, untied output."""
    return qwen3.describe(**_QWEN3_14B)


@decoder_builder
def qwen3_32b() -> DecoderDescription:
    """Qwen 3 32B: 64 layers, 64 heads / 8 kv heads, d=5120, head_dim 128, hidden 25600, vocab
    151936, untied output."""
    return qwen3.describe(**_QWEN3_32B)


lora_qwen3_0_6b = lora_sized(qwen3_0_6b, takes_apply_lora_to_output=False)
lora_qwen3_1_7b = lora_sized(qwen3_1_7b, takes_apply_lora_to_output=False)
lora_qwen3_4b = lora_sized(qwen3_4b, takes_apply_lora_to_output=False)
lora_qwen3_8b = lora_sized(qwen3_8b)
lora_qwen3_14b = lora_sized(qwen3_14b)
lora_qwen3_32b = lora_sized(qwen3_32b)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_qwen3_0_6b = qlora_builder(lora_qwen3_0_6b)
qlora_qwen3_1_7b = qlora_builder(lora_qwen3_1_7b)
qlora_qwen3_4b = qlora_builder(lora_qwen3_4b)
qlora_qwen3_8b = qlora_builder(lora_qwen3_8b)
qlora_qwen3_14b = qlora_builder(lora_qwen3_14b)
qlora_qwen3_32b = qlora_builder(lora_qwen3_32b)
