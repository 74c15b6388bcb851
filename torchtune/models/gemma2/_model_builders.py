"""Model builders: Gemma 2 2B, 9B and 27B (google/gemma-2-*b ``config.json``: vocabulary
256,000, 8,192 positions, window 4096 on every other layer, attention soft-cap 50,
final soft-cap 30, RMSNorm eps 1e-6, tied output; 27B's head_dim is 128 and its
``query_pre_attn_scalar`` 144 = d / n_h, the others' 256 = head_dim).

torchtune 0.6.1's size builders passed the two caps the other way round (attention 30,
final 50); these follow the published configs, and the parity tests hold them to
transformers. The LoRA twins take no ``apply_lora_to_output`` and default
``lora_dropout`` to 0.0, as 0.6.1's."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.gemma2._component_builders import gemma2

_COMMON = dict(
    vocab_size=256_000, max_seq_len=8_192, attn_dropout=0.0, norm_eps=1e-6,
    hidden_capping_value=50.0, final_capping_value=30.0, sliding_window_size=4_096,
)
_GEMMA2_2B = dict(
    _COMMON, num_layers=26, num_heads=8, head_dim=256, num_kv_heads=4, embed_dim=2_304,
    intermediate_dim=9_216, query_pre_attn_scalar=256,
)
_GEMMA2_9B = dict(
    _COMMON, num_layers=42, num_heads=16, head_dim=256, num_kv_heads=8, embed_dim=3_584,
    intermediate_dim=14_336, query_pre_attn_scalar=256,
)
_GEMMA2_27B = dict(
    _COMMON, num_layers=46, num_heads=32, head_dim=128, num_kv_heads=16, embed_dim=4_608,
    intermediate_dim=36_864, query_pre_attn_scalar=144,
)


@decoder_builder
def gemma2_2b() -> DecoderDescription:
    """Gemma 2 2B: 26 layers, d 2304, 8 query and 4 key/value heads of 256."""
    return gemma2.describe(**_GEMMA2_2B)


@decoder_builder
def gemma2_9b() -> DecoderDescription:
    """Gemma 2 9B: 42 layers, d 3584, 16 query and 8 key/value heads of 256."""
    return gemma2.describe(**_GEMMA2_9B)


@decoder_builder
def gemma2_27b() -> DecoderDescription:
    """Gemma 2 27B: 46 layers, d 4608, 32 query and 16 key/value heads of 128."""
    return gemma2.describe(**_GEMMA2_27B)


lora_gemma2_2b = lora_sized(gemma2_2b, takes_apply_lora_to_output=False, lora_dropout=0.0)
lora_gemma2_9b = lora_sized(gemma2_9b, takes_apply_lora_to_output=False, lora_dropout=0.0)
lora_gemma2_27b = lora_sized(gemma2_27b, takes_apply_lora_to_output=False, lora_dropout=0.0)
qlora_gemma2_2b = qlora_builder(lora_gemma2_2b)
qlora_gemma2_9b = qlora_builder(lora_gemma2_9b)
qlora_gemma2_27b = qlora_builder(lora_gemma2_27b)
