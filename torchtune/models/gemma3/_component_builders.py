"""Component builders for Gemma 3 (Google, 2025), text decoder, on the shared decoder.

Gemma 3 is Gemma 2's layout (four norms per layer, ``query_pre_attn_scalar``) without the
soft-caps, with per-head ``1 + w`` RMSNorms on queries and keys (``attn.q_norm.scale``,
``attn.k_norm.scale``), five sliding-window layers to each global one (layer ``i`` is
global when ``i + 1`` is a multiple of ``sliding_window_pattern``), and two RoPE settings:
the sliding layers use ``local_rope_base`` (10,000), the global ones ``rope_base``
(1,000,000), linearly scaled by ``rope_scaling_factor`` (8) on the 4B+ sizes.
"""

from typing import List, Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._description import DecoderDescription
from torchtune.models._gemma_description import gemma_description, pattern_layer_types


@decoder_builder
def gemma3(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: int = 1_000_000,
    local_rope_base: int = 10_000,
    rope_scaling_factor: Optional[float] = None,
    sliding_window_size: int = 4096,
    sliding_window_pattern: int = 6,
    layer_types: Optional[List[str]] = None,
    query_pre_attn_scalar: Optional[int] = None,
    final_capping_value: Optional[float] = None,
) -> DecoderDescription:
    """Build a Gemma 3 text decoder.

    Args:
        vocab_size, num_layers, num_heads, head_dim, num_kv_heads, embed_dim,
        intermediate_dim, max_seq_len, attn_dropout, norm_eps: as in
            ``torchtune.models.gemma.gemma``.
        rope_base (int): RoPE base of the global layers.
        local_rope_base (int): RoPE base of the sliding layers.
        rope_scaling_factor (Optional[float]): linear RoPE scaling of the global layers
            (4B, 12B, 27B: 8.0); None: none.
        sliding_window_size (int): the window of the sliding layers (512 for 270M and 1B,
            1024 for 4B+).
        sliding_window_pattern (int): every this-many-th layer is global.
        layer_types (Optional[List[str]]): ``"sliding_attention"`` / ``"full_attention"``
            per layer (config.json's ``layer_types``), instead of the pattern.
        query_pre_attn_scalar (Optional[int]): the q.k scale is its inverse square root;
            None: ``head_dim`` (the scale is then written out, as transformers' configs
            always give it, so the two describe the same model).
        final_capping_value (Optional[float]): final-logit soft-cap; None (Gemma 3's).

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.
    """
    return gemma_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, head_dim=head_dim,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, intermediate_dim=intermediate_dim,
        max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, sandwich_norms=True,
        layer_types=layer_types or pattern_layer_types(num_layers, sliding_window_pattern),
        sliding_window=sliding_window_size, local_rope_base=local_rope_base,
        rope_scaling_factor=rope_scaling_factor, query_pre_attn_scalar=query_pre_attn_scalar or head_dim,
        final_softcap=final_capping_value, qk_norm=True,
    )


lora_gemma3 = lora_builder(
    gemma3,
    notes=(
        "The q/k norms, like every base parameter, are frozen by ``set_trainable_params``; "
        "the output projection is the embedding's weight and takes no adapter."
    ),
)
