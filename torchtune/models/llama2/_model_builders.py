"""Model builders: Llama 2 at the published sizes (Touvron et al. 2023, Table 1 and
meta-llama/llama ``params.json``). Each size is written once, as the description its base
builder gives; the LoRA and QLoRA builders are derived from it (``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.llama2._component_builders import llama2


@decoder_builder
def llama2_7b() -> DecoderDescription:
    """Llama 2 7B: 32 layers, 32 heads, d=4096, hidden 11008; 6,738,415,616 parameters."""
    return llama2.describe(
        vocab_size=32_000,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        embed_dim=4096,
        max_seq_len=4096,
        attn_dropout=0.0,
        norm_eps=1e-5,
    )


@decoder_builder
def llama2_13b() -> DecoderDescription:
    """Llama 2 13B: 40 layers, 40 heads, d=5120, hidden 13824; 13,015,864,320 parameters."""
    return llama2.describe(
        vocab_size=32_000,
        num_layers=40,
        num_heads=40,
        num_kv_heads=40,
        embed_dim=5120,
        intermediate_dim=13824,
        max_seq_len=4096,
        attn_dropout=0.0,
        norm_eps=1e-5,
    )


@decoder_builder
def llama2_70b() -> DecoderDescription:
    """Llama 2 70B: 80 layers, 64 heads with 8 kv heads (GQA), d=8192, hidden 28672
    (Meta's ``ffn_dim_multiplier=1.3``); 68,976,648,192 parameters."""
    return llama2.describe(
        vocab_size=32_000,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
        embed_dim=8192,
        intermediate_dim=28672,
        max_seq_len=4096,
        attn_dropout=0.0,
        norm_eps=1e-5,
    )


lora_llama2_7b = lora_sized(llama2_7b)
lora_llama2_13b = lora_sized(llama2_13b)
lora_llama2_70b = lora_sized(llama2_70b)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama2_7b = qlora_builder(lora_llama2_7b)
qlora_llama2_13b = qlora_builder(lora_llama2_13b)
qlora_llama2_70b = qlora_builder(lora_llama2_70b)
