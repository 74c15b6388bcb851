"""Model builders: Code Llama at the published sizes (Rozière et al. 2023), torchtune
0.6.1's names. Code Llama is Llama 2's architecture with a 16-token-larger vocabulary
(infilling tokens), 16K context and RoPE base 1e6; its checkpoints load with
``model_type: LLAMA2`` and it uses ``llama2_tokenizer``. The LoRA and QLoRA builders are
derived from the base ones (``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.llama2._component_builders import llama2

# vocab, layers, heads, kv heads, dim, hidden (Meta's params.json for each size).
_SIZES = {
    "7b": dict(num_layers=32, num_heads=32, num_kv_heads=32, embed_dim=4096, intermediate_dim=11008),
    "13b": dict(num_layers=40, num_heads=40, num_kv_heads=40, embed_dim=5120, intermediate_dim=13824),
    "70b": dict(num_layers=80, num_heads=64, num_kv_heads=8, embed_dim=8192, intermediate_dim=28672),
}
_COMMON = dict(vocab_size=32_016, max_seq_len=16384, attn_dropout=0.0, norm_eps=1e-5, rope_base=1_000_000)


@decoder_builder
def code_llama2_7b() -> DecoderDescription:
    """Code Llama 7B: 32 layers, 32 heads, d=4096, hidden 11008."""
    return llama2.describe(**_SIZES["7b"], **_COMMON)


@decoder_builder
def code_llama2_13b() -> DecoderDescription:
    """Code Llama 13B: 40 layers, 40 heads, d=5120, hidden 13824."""
    return llama2.describe(**_SIZES["13b"], **_COMMON)


@decoder_builder
def code_llama2_70b() -> DecoderDescription:
    """Code Llama 70B: 80 layers, 64 heads (8 kv), d=8192, hidden 28672."""
    return llama2.describe(**_SIZES["70b"], **_COMMON)


lora_code_llama2_7b = lora_sized(code_llama2_7b)
lora_code_llama2_13b = lora_sized(code_llama2_13b)
lora_code_llama2_70b = lora_sized(code_llama2_70b)

qlora_code_llama2_7b = qlora_builder(lora_code_llama2_7b)
qlora_code_llama2_13b = qlora_builder(lora_code_llama2_13b)
qlora_code_llama2_70b = qlora_builder(lora_code_llama2_70b)
