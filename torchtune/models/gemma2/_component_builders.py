"""Component builders for Gemma 2 (Google, 2024): torchtune 0.6.1's ``gemma2`` and
``lora_gemma2`` signatures, on the shared decoder.

Gemma 2 is Gemma (``torchtune.models.gemma``) with four norms per layer (a norm after
attention and after the MLP as well as before: ``sa_scale`` / ``mlp_scale`` in the state
dict, 0.6.1's names), the attention logits soft-capped (``hidden_capping_value``, 50) and
the final logits too (``final_capping_value``, 30), a sliding window on every other layer
(layers 0, 2, 4, ...: transformers' ``layer_types``), and the q.k scale
``query_pre_attn_scalar ** -0.5``.
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._description import DecoderDescription
from torchtune.models._gemma_description import gemma_description, pattern_layer_types


@decoder_builder
def gemma2(
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
    rope_base: int = 10_000,
    hidden_capping_value: float = 50.0,
    final_capping_value: float = 30.0,
    sliding_window_size: int = 4096,
    query_pre_attn_scalar: Optional[int] = None,
) -> DecoderDescription:
    """Build a Gemma 2 decoder.

    Args:
        vocab_size, num_layers, num_heads, head_dim, num_kv_heads, embed_dim,
        intermediate_dim, max_seq_len, attn_dropout, norm_eps, rope_base: as in
            ``torchtune.models.gemma.gemma``.
        hidden_capping_value (float): attention-logit soft-cap (``attn_logit_softcapping``).
        final_capping_value (float): final-logit soft-cap (``final_logit_softcapping``);
            the fused and chunked losses apply it too.
        sliding_window_size (int): the window of the even-numbered layers.
        query_pre_attn_scalar (Optional[int]): the q.k scale is its inverse square root;
            None: ``head_dim`` (the scale is then written out, as transformers' configs
            always give it, so the two describe the same model).

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.
    """
    return gemma_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, head_dim=head_dim,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, intermediate_dim=intermediate_dim,
        max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, sandwich_norms=True,
        layer_types=pattern_layer_types(num_layers, 2), sliding_window=sliding_window_size,
        query_pre_attn_scalar=query_pre_attn_scalar or head_dim, attn_softcap=hidden_capping_value,
        final_softcap=final_capping_value,
    )


lora_gemma2 = lora_builder(
    gemma2,
    notes=(
        "The output projection is the embedding's weight and takes no adapter "
        "(``apply_lora_to_output=True`` raises)."
    ),
)
