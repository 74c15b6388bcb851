"""Model builders: Llama 3.1 at the published sizes (meta-llama/llama-models ``sku_list``:
128K context, RoPE scale factor 8). The LoRA and QLoRA builders are derived from the base
ones (``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3_1._component_builders import llama3_1

_LLAMA3_1_8B = dict(
    vocab_size=128_256,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=4096,
    max_seq_len=131_072,
    intermediate_dim=14336,
    attn_dropout=0.0,
    norm_eps=1e-5,
    rope_base=500_000,
    scale_factor=8,
)
_LLAMA3_1_70B = dict(
    _LLAMA3_1_8B, num_layers=80, num_heads=64, embed_dim=8192, intermediate_dim=28672
)
_LLAMA3_1_405B = dict(
    _LLAMA3_1_8B, num_layers=126, num_heads=128, embed_dim=16384, intermediate_dim=53248
)


@decoder_builder
def llama3_1_8b() -> DecoderDescription:
    """Llama 3.1 8B: 32 layers, 32 heads / 8 kv heads, d=4096, hidden 14336;
    8,030,261,248 parameters."""
    return llama3_1.describe(**_LLAMA3_1_8B)


@decoder_builder
def llama3_1_70b() -> DecoderDescription:
    """Llama 3.1 70B: 80 layers, 64 heads / 8 kv heads, d=8192, hidden 28672;
    70,553,706,496 parameters."""
    return llama3_1.describe(**_LLAMA3_1_70B)


@decoder_builder
def llama3_1_405b() -> DecoderDescription:
    """Llama 3.1 405B: 126 layers, 128 heads / 8 kv heads, d=16384, hidden 53248."""
    return llama3_1.describe(**_LLAMA3_1_405B)


lora_llama3_1_8b = lora_sized(llama3_1_8b)
lora_llama3_1_70b = lora_sized(llama3_1_70b)
lora_llama3_1_405b = lora_sized(llama3_1_405b)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_1_8b = qlora_builder(lora_llama3_1_8b)
qlora_llama3_1_70b = qlora_builder(lora_llama3_1_70b)
qlora_llama3_1_405b = qlora_builder(lora_llama3_1_405b)
