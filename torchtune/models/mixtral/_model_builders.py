"""Model builders: Mixtral 8x7B (mistralai/Mixtral-8x7B-v0.1 and -Instruct-v0.1
``config.json``: 8 experts of width 14336, 2 per token, 32 layers, d 4096, 32 query and 8
key/value heads, RoPE base 1e6, no window, RMSNorm eps 1e-5, router_aux_loss_coef 0.02)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.mixtral._component_builders import mixtral


@decoder_builder
def mixtral_8x7b() -> DecoderDescription:
    """Mixtral 8x7B: 46.7B parameters, 12.9B active per token."""
    return mixtral.describe(
        vocab_size=32_000, num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4_096,
        intermediate_dim=14_336, num_experts=8, experts_per_token=2, max_seq_len=32_768,
        norm_eps=1e-5, rope_base=1_000_000, router_aux_loss_coef=0.02,
    )


lora_mixtral_8x7b = lora_sized(mixtral_8x7b, lora_dropout=0.0, router=True)
qlora_mixtral_8x7b = qlora_builder(lora_mixtral_8x7b)
