"""Model builders: the Qwen 2.5 models at the published sizes (Qwen/Qwen2.5-*
``config.json``: RoPE base 1e6, RMSNorm eps 1e-6, q/k/v biases; 0.5B-3B tie the output to the
embedding and have a 32K context, 7B and larger are untied with 128K).

Base and instruct checkpoints share an architecture; the two names exist as in torchtune
0.6.1. The LoRA builders of tied sizes have no ``apply_lora_to_output`` argument (0.6.1's
signatures)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.qwen2._component_builders import qwen2

_QWEN2_5_0_5B = dict(
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
_QWEN2_5_1_5B = dict(
    vocab_size=151_936,
    num_layers=28,
    num_heads=12,
    num_kv_heads=2,
    embed_dim=1_536,
    intermediate_dim=8_960,
    max_seq_len=32_768,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=True,
)
_QWEN2_5_3B = dict(
    vocab_size=151_936,
    num_layers=36,
    num_heads=16,
    num_kv_heads=2,
    embed_dim=2_048,
    intermediate_dim=11_008,
    max_seq_len=32_768,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=True,
)
_QWEN2_5_7B = dict(
    vocab_size=152_064,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    embed_dim=3_584,
    intermediate_dim=18_944,
    max_seq_len=131_072,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)
_QWEN2_5_14B = dict(
    vocab_size=152_064,
    num_layers=48,
    num_heads=40,
    num_kv_heads=8,
    embed_dim=5_120,
    intermediate_dim=13_824,
    max_seq_len=131_072,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)
_QWEN2_5_32B = dict(
    vocab_size=152_064,
    num_layers=64,
    num_heads=40,
    num_kv_heads=8,
    embed_dim=5_120,
    intermediate_dim=27_648,
    max_seq_len=131_072,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)
_QWEN2_5_72B = dict(
    vocab_size=152_064,
    num_layers=80,
    num_heads=64,
    num_kv_heads=8,
    embed_dim=8_192,
    intermediate_dim=29_568,
    max_seq_len=131_072,
    norm_eps=1e-6,
    rope_base=1_000_000,
    tie_word_embeddings=False,
)


@decoder_builder
def qwen2_5_0_5b() -> DecoderDescription:
    """Qwen 2.5 0.5B: 24 layers, 14 heads / 2 kv heads, d=896, hidden 4864, vocab 151936, tied
    output."""
    return qwen2.describe(**_QWEN2_5_0_5B)


@decoder_builder
def qwen2_5_1_5b_base() -> DecoderDescription:
    """Qwen 2.5 1.5B (base): 28 layers, 12 heads / 2 kv heads, d=1536, hidden 8960, vocab
    151936, tied output."""
    return qwen2.describe(**_QWEN2_5_1_5B)


@decoder_builder
def qwen2_5_1_5b_instruct() -> DecoderDescription:
    """Qwen 2.5 1.5B (instruct): 28 layers, 12 heads / 2 kv heads, d=1536, hidden 8960, vocab
    151936, tied output."""
    return qwen2.describe(**_QWEN2_5_1_5B)


@decoder_builder
def qwen2_5_3b() -> DecoderDescription:
    """Qwen 2.5 3B: 36 layers, 16 heads / 2 kv heads, d=2048, hidden 11008, vocab 151936, tied
    output."""
    return qwen2.describe(**_QWEN2_5_3B)


@decoder_builder
def qwen2_5_7b_base() -> DecoderDescription:
    """Qwen 2.5 7B (base): 28 layers, 28 heads / 4 kv heads, d=3584, hidden 18944, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_7B)


@decoder_builder
def qwen2_5_7b_instruct() -> DecoderDescription:
    """Qwen 2.5 7B (instruct): 28 layers, 28 heads / 4 kv heads, d=3584, hidden 18944, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_7B)


@decoder_builder
def qwen2_5_14b_base() -> DecoderDescription:
    """Qwen 2.5 14B (base): 48 layers, 40 heads / 8 kv heads, d=5120, hidden 13824, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_14B)


@decoder_builder
def qwen2_5_14b_instruct() -> DecoderDescription:
    """Qwen 2.5 14B (instruct): 48 layers, 40 heads / 8 kv heads, d=5120, hidden 13824, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_14B)


@decoder_builder
def qwen2_5_32b_base() -> DecoderDescription:
    """Qwen 2.5 32B (base): 64 layers, 40 heads / 8 kv heads, d=5120, hidden 27648, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_32B)


@decoder_builder
def qwen2_5_32b_instruct() -> DecoderDescription:
    """Qwen 2.5 32B (instruct): 64 layers, 40 heads / 8 kv heads, d=5120, hidden 27648, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_32B)


@decoder_builder
def qwen2_5_72b_base() -> DecoderDescription:
    """Qwen 2.5 72B (base): 80 layers, 64 heads / 8 kv heads, d=8192, hidden 29568, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_72B)


@decoder_builder
def qwen2_5_72b_instruct() -> DecoderDescription:
    """Qwen 2.5 72B (instruct): 80 layers, 64 heads / 8 kv heads, d=8192, hidden 29568, vocab
    152064, untied output."""
    return qwen2.describe(**_QWEN2_5_72B)


lora_qwen2_5_0_5b = lora_sized(qwen2_5_0_5b, takes_apply_lora_to_output=False)
lora_qwen2_5_1_5b_base = lora_sized(qwen2_5_1_5b_base, takes_apply_lora_to_output=False)
lora_qwen2_5_1_5b_instruct = lora_sized(qwen2_5_1_5b_instruct, takes_apply_lora_to_output=False)
lora_qwen2_5_3b = lora_sized(qwen2_5_3b, takes_apply_lora_to_output=False)
lora_qwen2_5_7b_base = lora_sized(qwen2_5_7b_base)
lora_qwen2_5_7b_instruct = lora_sized(qwen2_5_7b_instruct)
lora_qwen2_5_14b_base = lora_sized(qwen2_5_14b_base)
lora_qwen2_5_14b_instruct = lora_sized(qwen2_5_14b_instruct)
lora_qwen2_5_32b_base = lora_sized(qwen2_5_32b_base)
lora_qwen2_5_32b_instruct = lora_sized(qwen2_5_32b_instruct)
lora_qwen2_5_72b_base = lora_sized(qwen2_5_72b_base)
lora_qwen2_5_72b_instruct = lora_sized(qwen2_5_72b_instruct)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_qwen2_5_0_5b = qlora_builder(lora_qwen2_5_0_5b)
qlora_qwen2_5_1_5b_base = qlora_builder(lora_qwen2_5_1_5b_base)
qlora_qwen2_5_1_5b_instruct = qlora_builder(lora_qwen2_5_1_5b_instruct)
qlora_qwen2_5_3b = qlora_builder(lora_qwen2_5_3b)
qlora_qwen2_5_7b_base = qlora_builder(lora_qwen2_5_7b_base)
qlora_qwen2_5_7b_instruct = qlora_builder(lora_qwen2_5_7b_instruct)
qlora_qwen2_5_14b_base = qlora_builder(lora_qwen2_5_14b_base)
qlora_qwen2_5_14b_instruct = qlora_builder(lora_qwen2_5_14b_instruct)
qlora_qwen2_5_32b_base = qlora_builder(lora_qwen2_5_32b_base)
qlora_qwen2_5_32b_instruct = qlora_builder(lora_qwen2_5_32b_instruct)
qlora_qwen2_5_72b_base = qlora_builder(lora_qwen2_5_72b_base)
qlora_qwen2_5_72b_instruct = qlora_builder(lora_qwen2_5_72b_instruct)
