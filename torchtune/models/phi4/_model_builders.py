"""Model builders: Phi-4 14B (microsoft/phi-4 config.json), Phi-3's architecture at another
size, with the LoRA and QLoRA builders derived from it (``models/_builders.py``).

torchtune 0.6.1 built it with Phi-3's default RoPE base (10,000); the checkpoint's is
250,000, which is what this builder uses (a model built otherwise is refused at load by the
config.json check)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.phi3._component_builders import phi3


@decoder_builder
def phi4_14b() -> DecoderDescription:
    """Phi-4 14B: 40 layers, 40 heads with 10 kv heads, d=5120, hidden 17920, vocab 100352,
    RoPE base 250000, no window; 14,659,507,200 parameters."""
    return phi3.describe(
        vocab_size=100_352, num_layers=40, num_heads=40, num_kv_heads=10, embed_dim=5120,
        intermediate_dim=17920, max_seq_len=16384, attn_dropout=0.0, norm_eps=1e-5,
        rope_base=250_000,
    )


lora_phi4_14b = lora_sized(phi4_14b, lora_dropout=0.0)
qlora_phi4_14b = qlora_builder(lora_phi4_14b)
