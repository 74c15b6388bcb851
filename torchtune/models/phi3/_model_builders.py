"""Model builders: Phi-3 mini (microsoft/Phi-3-mini-4k-instruct config.json), with the LoRA
and QLoRA builders derived from it (``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.phi3._component_builders import phi3


@decoder_builder
def phi3_mini() -> DecoderDescription:
    """Phi-3 mini (4k): 32 layers, 32 heads, d=3072, hidden 8192, vocab 32064, a 2047-token
    sliding window; 3,821,079,552 parameters."""
    return phi3.describe(
        vocab_size=32_064, num_layers=32, num_heads=32, num_kv_heads=32, embed_dim=3072,
        intermediate_dim=8192, max_seq_len=4096, attn_dropout=0.0, norm_eps=1e-5,
        sliding_window=2047,
    )


lora_phi3_mini = lora_sized(phi3_mini, lora_dropout=0.0)
qlora_phi3_mini = qlora_builder(lora_phi3_mini)
