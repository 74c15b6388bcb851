"""Model builders: Gemma 2B and 7B (google/gemma-2b, google/gemma-7b ``config.json``:
vocabulary 256,000, head_dim 256, 8,192 positions, RoPE base 10,000, RMSNorm eps 1e-6,
output tied to the embedding; 2B has one key/value head).

Their LoRA twins take no ``apply_lora_to_output`` (the output is tied) and default
``lora_dropout`` to 0.0, as torchtune 0.6.1's."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.gemma._component_builders import gemma

_GEMMA_2B = dict(
    vocab_size=256_000, num_layers=18, num_heads=8, head_dim=256, num_kv_heads=1,
    embed_dim=2_048, intermediate_dim=16_384, max_seq_len=8_192, attn_dropout=0.0,
    norm_eps=1e-6,
)
_GEMMA_7B = dict(
    vocab_size=256_000, num_layers=28, num_heads=16, head_dim=256, num_kv_heads=16,
    embed_dim=3_072, intermediate_dim=24_576, max_seq_len=8_192, attn_dropout=0.0,
    norm_eps=1e-6,
)


@decoder_builder
def gemma_2b() -> DecoderDescription:
    """Gemma 2B: 18 layers, d 2048, 8 query heads and 1 key/value head of 256."""
    return gemma.describe(**_GEMMA_2B)


@decoder_builder
def gemma_7b() -> DecoderDescription:
    """Gemma 7B: 28 layers, d 3072, 16 heads of 256."""
    return gemma.describe(**_GEMMA_7B)


lora_gemma_2b = lora_sized(gemma_2b, takes_apply_lora_to_output=False, lora_dropout=0.0)
lora_gemma_7b = lora_sized(gemma_7b, takes_apply_lora_to_output=False, lora_dropout=0.0)
qlora_gemma_2b = qlora_builder(lora_gemma_2b)
qlora_gemma_7b = qlora_builder(lora_gemma_7b)
