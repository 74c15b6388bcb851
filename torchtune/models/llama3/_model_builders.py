"""Model builders: Llama 3 at the published sizes (meta-llama/llama3 ``params.json``). The
LoRA and QLoRA builders are derived from the base ones (``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3._component_builders import llama3

_LLAMA3_8B = dict(
    vocab_size=128_256,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=4096,
    max_seq_len=8192,
    intermediate_dim=14336,
    attn_dropout=0.0,
    norm_eps=1e-5,
    rope_base=500_000,
)
_LLAMA3_70B = dict(
    _LLAMA3_8B, num_layers=80, num_heads=64, embed_dim=8192, intermediate_dim=28672
)


@decoder_builder
def llama3_8b() -> DecoderDescription:
    """Llama 3 8B: 32 layers, 32 heads / 8 kv heads, d=4096, hidden 14336, 8K context."""
    return llama3.describe(**_LLAMA3_8B)


@decoder_builder
def llama3_70b() -> DecoderDescription:
    """Llama 3 70B: 80 layers, 64 heads / 8 kv heads, d=8192, hidden 28672, 8K context."""
    return llama3.describe(**_LLAMA3_70B)


lora_llama3_8b = lora_sized(llama3_8b)
lora_llama3_70b = lora_sized(llama3_70b)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_8b = qlora_builder(lora_llama3_8b)
qlora_llama3_70b = qlora_builder(lora_llama3_70b)
