"""The Gemma decoders (Gemma, Gemma 2, Gemma 3) as a description of the shared decoder.

Gemma differs from Llama only in options the description already has, so its three
generations are one function here, with the choices each makes:

============================  ==========  ===========================  ======================
option                        Gemma       Gemma 2                      Gemma 3 (text)
============================  ==========  ===========================  ======================
embedding x sqrt(d)           yes         yes                          yes
RMSNorm ``x * (1 + w)``       yes         yes                          yes
MLP                           GeGLU       GeGLU                        GeGLU
norms per layer               2 (pre)     4 (pre + post, "sandwich")   4
q.k scale                     h_d^-1/2    query_pre_attn_scalar^-1/2   query_pre_attn_scalar^-1/2
attention soft-cap            none        50                           none
final-logit soft-cap          none        30                           none
sliding window                none        every other layer (4096)     5 of each 6 (512/1024)
RoPE base                     10,000      10,000                       local 10,000; global 1e6
                                                                       (linear x8 on 4B+)
per-head q/k RMSNorm          no          no                           yes (``1 + w``)
output                        tied        tied                         tied
============================  ==========  ===========================  ======================

The family builders (``torchtune.models.gemma.gemma``, ``gemma2``, ``gemma3``) and
``auto_model`` (``GemmaForCausalLM``, ``Gemma2ForCausalLM``, ``Gemma3ForCausalLM``) all call
``gemma_description``; ``build_decoder`` builds the modules.
"""

import math
from typing import Optional, Sequence

from torchtune._errors import UserValueError
from torchtune.models._description import (
    AttentionDescription,
    DecoderDescription,
    LayerDescription,
    MLPDescription,
    NormDescription,
    RopeDescription,
)
from torchtune.modules import LinearRopeScaling

SLIDING = "sliding_attention"
FULL = "full_attention"


def pattern_layer_types(num_layers: int, pattern: int) -> list:
    """transformers' rule for Gemma 2 (``pattern`` 2) and Gemma 3 (6): layer ``i`` slides
    unless ``(i + 1)`` is a multiple of ``pattern``; ``pattern`` 1 slides nowhere."""
    if pattern < 1:
        raise UserValueError(f"sliding_window_pattern ({pattern}) must be at least 1")
    return [SLIDING if (i + 1) % pattern else FULL for i in range(num_layers)]


def gemma_description(
    *,
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float,
    norm_eps: float,
    rope_base: float,
    sandwich_norms: bool = False,
    layer_types: Optional[Sequence[str]] = None,
    sliding_window: Optional[int] = None,
    local_rope_base: Optional[float] = None,
    rope_scaling_factor: Optional[float] = None,
    query_pre_attn_scalar: Optional[float] = None,
    attn_softcap: Optional[float] = None,
    final_softcap: Optional[float] = None,
    qk_norm: bool = False,
    tie_word_embeddings: bool = True,
) -> DecoderDescription:
    """A Gemma-style decoder.

    Args:
        vocab_size, num_layers, num_heads, head_dim, num_kv_heads, embed_dim,
        intermediate_dim, max_seq_len, attn_dropout, norm_eps: sizes, as in ``gemma``.
        rope_base (float): RoPE base of the full-attention layers (all layers when no
            ``local_rope_base``).
        sandwich_norms (bool): a norm after attention and after the MLP too (Gemma 2, 3).
        layer_types (Optional[Sequence[str]]): ``"sliding_attention"`` or
            ``"full_attention"`` per layer; None: all full.
        sliding_window (Optional[int]): the window of the sliding layers.
        local_rope_base (Optional[float]): RoPE base of the sliding layers (Gemma 3's
            ``rope_local_base_freq``); None: ``rope_base``.
        rope_scaling_factor (Optional[float]): linear RoPE scaling of the full-attention
            layers (Gemma 3 4B+: 8); None: none.
        query_pre_attn_scalar (Optional[float]): the q.k scale is its inverse square root;
            None: ``head_dim``'s.
        attn_softcap (Optional[float]): attention-logit soft-cap (Gemma 2: 50).
        final_softcap (Optional[float]): final-logit soft-cap (Gemma 2: 30).
        qk_norm (bool): per-head ``1 + w`` RMSNorm on queries and keys (Gemma 3).
        tie_word_embeddings (bool): the output projection is the embedding (every Gemma).

    Raises:
        UserValueError: a bad layer type, a sliding layer without a window, bad sizes.
    """
    types = list(layer_types) if layer_types is not None else [FULL] * num_layers
    if len(types) != num_layers or set(types) - {SLIDING, FULL}:
        raise UserValueError(
            f"layer_types must give {num_layers} entries of {SLIDING!r} or {FULL!r}, got {types!r}"
        )
    if SLIDING in types and sliding_window is None:
        raise UserValueError("sliding layers need a sliding_window (tokens, itself included)")
    norm = NormDescription(norm_eps, offset=1.0)
    scale = None if query_pre_attn_scalar is None else float(query_pre_attn_scalar) ** -0.5
    global_rope = RopeDescription(
        base=rope_base,
        scaling=None if rope_scaling_factor in (None, 1.0) else LinearRopeScaling(rope_scaling_factor),
    )
    local_rope = RopeDescription(base=rope_base if local_rope_base is None else local_rope_base)
    layers = tuple(
        LayerDescription(
            attention=AttentionDescription(
                num_heads=num_heads,
                num_kv_heads=num_kv_heads,
                head_dim=head_dim,
                rope=local_rope if kind == SLIDING else global_rope,
                q_norm=norm if qk_norm else None,
                k_norm=norm if qk_norm else None,
                scale=scale,
                softcap=attn_softcap,
                sliding_window=sliding_window if kind == SLIDING else None,
            ),
            mlp=MLPDescription(hidden_dim=intermediate_dim, activation="gelu_tanh"),
            norm=norm,
            post_norms=sandwich_norms,
        )
        for kind in types
    )
    return DecoderDescription(
        vocab_size=vocab_size,
        embed_dim=embed_dim,
        max_seq_len=max_seq_len,
        layers=layers,
        norm=norm,
        tie_word_embeddings=tie_word_embeddings,
        # The reference multiplies by hidden_size ** 0.5 cast to the embedding's dtype.
        embed_scale=math.sqrt(embed_dim),
        final_softcap=final_softcap,
        attn_dropout=attn_dropout,
    )
