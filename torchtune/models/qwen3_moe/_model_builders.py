"""Model builders: Qwen3-30B-A3B and Qwen3-235B-A22B (Qwen/Qwen3-*-A*B ``config.json``:
128 experts, 8 per token, weights renormalised, head_dim 128, RoPE base 1e6, RMSNorm eps
1e-6, 40,960 positions, untied output, every layer a mixture)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.qwen3_moe._component_builders import qwen3_moe

_COMMON = dict(
    vocab_size=151_936, num_kv_heads=4, head_dim=128, num_experts=128, experts_per_token=8,
    max_seq_len=40_960, norm_eps=1e-6, rope_base=1_000_000, norm_topk_prob=True,
)


@decoder_builder
def qwen3_moe_30b_a3b() -> DecoderDescription:
    """Qwen3-30B-A3B: 48 layers, d 2048, 32 query heads, experts of width 768."""
    return qwen3_moe.describe(**_COMMON, num_layers=48, num_heads=32, embed_dim=2_048,
                              intermediate_dim=6_144, moe_intermediate_dim=768)


@decoder_builder
def qwen3_moe_235b_a22b() -> DecoderDescription:
    """Qwen3-235B-A22B: 94 layers, d 4096, 64 query heads, experts of width 1536."""
    return qwen3_moe.describe(**_COMMON, num_layers=94, num_heads=64, embed_dim=4_096,
                              intermediate_dim=12_288, moe_intermediate_dim=1_536)


lora_qwen3_moe_30b_a3b = lora_sized(qwen3_moe_30b_a3b, router=True)
lora_qwen3_moe_235b_a22b = lora_sized(qwen3_moe_235b_a22b, router=True)
qlora_qwen3_moe_30b_a3b = qlora_builder(lora_qwen3_moe_30b_a3b)
qlora_qwen3_moe_235b_a22b = qlora_builder(lora_qwen3_moe_235b_a22b)
