"""Model builders: the Gemma 3 text decoders (google/gemma-3-* ``config.json``, the
``text_config`` of the 4B-27B multimodal checkpoints): RMSNorm eps 1e-6, RoPE bases 10,000
(sliding layers) and 1,000,000 (global), five sliding layers to each global one, tied
output. 270M and 1B: vocabulary 262,144, window 512, 32,768 positions, no RoPE scaling;
4B, 12B, 27B: vocabulary 262,208, window 1024, 131,072 positions, linear RoPE scaling 8 on
the global layers. ``query_pre_attn_scalar`` is 256 but for 27B (168 = d / n_h).

The LoRA twins take no ``apply_lora_to_output`` (the output is tied)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.gemma3._component_builders import gemma3

_SMALL = dict(
    vocab_size=262_144, max_seq_len=32_768, norm_eps=1e-6, rope_base=1_000_000,
    local_rope_base=10_000, sliding_window_size=512, sliding_window_pattern=6,
)
_LARGE = dict(_SMALL, vocab_size=262_208, max_seq_len=131_072, sliding_window_size=1_024,
              rope_scaling_factor=8.0)
_GEMMA3_270M = dict(_SMALL, num_layers=18, num_heads=4, head_dim=256, num_kv_heads=1,
                    embed_dim=640, intermediate_dim=2_048, query_pre_attn_scalar=256)
_GEMMA3_1B = dict(_SMALL, num_layers=26, num_heads=4, head_dim=256, num_kv_heads=1,
                  embed_dim=1_152, intermediate_dim=6_912, query_pre_attn_scalar=256)
_GEMMA3_4B = dict(_LARGE, num_layers=34, num_heads=8, head_dim=256, num_kv_heads=4,
                  embed_dim=2_560, intermediate_dim=10_240, query_pre_attn_scalar=256)
_GEMMA3_12B = dict(_LARGE, num_layers=48, num_heads=16, head_dim=256, num_kv_heads=8,
                   embed_dim=3_840, intermediate_dim=15_360, query_pre_attn_scalar=256)
_GEMMA3_27B = dict(_LARGE, num_layers=62, num_heads=32, head_dim=128, num_kv_heads=16,
                   embed_dim=5_376, intermediate_dim=21_504, query_pre_attn_scalar=168)


@decoder_builder
def gemma3_270m() -> DecoderDescription:
    """Gemma 3 270M: 18 layers, d 640, 4 query heads and 1 key/value head of 256."""
    return gemma3.describe(**_GEMMA3_270M)


@decoder_builder
def gemma3_1b() -> DecoderDescription:
    """Gemma 3 1B: 26 layers, d 1152, 4 query heads and 1 key/value head of 256."""
    return gemma3.describe(**_GEMMA3_1B)


@decoder_builder
def gemma3_4b() -> DecoderDescription:
    """Gemma 3 4B (text decoder): 34 layers, d 2560, 8 query and 4 key/value heads of 256."""
    return gemma3.describe(**_GEMMA3_4B)


@decoder_builder
def gemma3_12b() -> DecoderDescription:
    """Gemma 3 12B (text decoder): 48 layers, d 3840, 16 query and 8 key/value heads of 256."""
    return gemma3.describe(**_GEMMA3_12B)


@decoder_builder
def gemma3_27b() -> DecoderDescription:
    """Gemma 3 27B (text decoder): 62 layers, d 5376, 32 query and 16 key/value heads of 128."""
    return gemma3.describe(**_GEMMA3_27B)


lora_gemma3_270m = lora_sized(gemma3_270m, takes_apply_lora_to_output=False)
lora_gemma3_1b = lora_sized(gemma3_1b, takes_apply_lora_to_output=False)
lora_gemma3_4b = lora_sized(gemma3_4b, takes_apply_lora_to_output=False)
lora_gemma3_12b = lora_sized(gemma3_12b, takes_apply_lora_to_output=False)
lora_gemma3_27b = lora_sized(gemma3_27b, takes_apply_lora_to_output=False)
qlora_gemma3_270m = qlora_builder(lora_gemma3_270m)
qlora_gemma3_1b = qlora_builder(lora_gemma3_1b)
qlora_gemma3_4b = qlora_builder(lora_gemma3_4b)
qlora_gemma3_12b = qlora_builder(lora_gemma3_12b)
qlora_gemma3_27b = qlora_builder(lora_gemma3_27b)
