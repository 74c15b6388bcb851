"""Model builders: the Qwen 2 models at the published sizes (Qwen/Qwen2-*-Instruct
``config.json``, as in torchtune 0.6.1: RoPE base 1e6, RMSNorm eps 1e-6, q/k/v biases, 32K
context; 0.5B and 1.5B tie the output to the embedding).

The LoRA builders of tied sizes have no ``apply_lora_to_output`` argument (0.6.1's
signatures)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.qwen2._component_builders import qwen2

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


@decoder_builder
def qwen2_0_5b() -> DecoderDescription:
    """Qwen 2 0.5B: 24 layers, 14 heads / 2 kv heads, d=896, hidden 4864, vocab 151936, tied
    output."""
    return qwen2.describe(**_QWEN2_0_5B)


@decoder_builder
def qwen2_1_5b() -> DecoderDescription:
    """Qwen 2 1.5B: 28 layers, 12 heads / 2 kv heads, d=1536, hidden 8960, vocab 151936, tied
    output."""
    return qwen2.describe(**_QWEN2_1_5B)


@decoder_builder
def qwen2_7b() -> DecoderDescription:
    """Qwen 2 7B: 28 layers, 28 heads / 4 kv heads, d=3584, hidden 18944, vocab 152064, untied
    output."""
    return qwen2.describe(**_QWEN2_7B)


lora_qwen2_0_5b = lora_sized(qwen2_0_5b, takes_apply_lora_to_output=False)
lora_qwen2_1_5b = lora_sized(qwen2_1_5b, takes_apply_lora_to_output=False)
lora_qwen2_7b = lora_sized(qwen2_7b)

# QLoRA: the LoRA builders with NF4 base weights.
qlora_qwen2_0_5b = qlora_builder(lora_qwen2_0_5b)
qlora_qwen2_1_5b = qlora_builder(lora_qwen2_1_5b)
qlora_qwen2_7b = qlora_builder(lora_qwen2_7b)
