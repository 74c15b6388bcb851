"""Model builders: the Llama 3.2 text models at the published sizes (meta-llama/llama-models
``sku_list``: 128K context, RoPE scale factor 32, output tied to the embedding). The LoRA and
QLoRA builders are derived from the base ones (``models/_builders.py``); as in torchtune
0.6.1 they take ``apply_lora_to_output``, which raises when True (the tied output takes no
adapter)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3_2._component_builders import llama3_2

_LLAMA3_2_1B = dict(
    vocab_size=128_256,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    embed_dim=2048,
    max_seq_len=131_072,
    intermediate_dim=8192,
    attn_dropout=0.0,
    norm_eps=1e-5,
    rope_base=500_000,
    scale_factor=32,
    tie_word_embeddings=True,
)
_LLAMA3_2_3B = dict(_LLAMA3_2_1B, num_layers=28, num_heads=24, embed_dim=3072)


@decoder_builder
def llama3_2_1b() -> DecoderDescription:
    """Llama 3.2 1B: 16 layers, 32 heads / 8 kv heads, d=2048, hidden 8192, tied output;
    1,235,814,400 parameters."""
    return llama3_2.describe(**_LLAMA3_2_1B)


@decoder_builder
def llama3_2_3b() -> DecoderDescription:
    """Llama 3.2 3B: 28 layers, 24 heads / 8 kv heads, d=3072, hidden 8192, tied output;
    3,212,749,824 parameters."""
    return llama3_2.describe(**_LLAMA3_2_3B)


lora_llama3_2_1b = lora_sized(llama3_2_1b)
lora_llama3_2_3b = lora_sized(llama3_2_3b)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_2_1b = qlora_builder(lora_llama3_2_1b)
qlora_llama3_2_3b = qlora_builder(lora_llama3_2_3b)
