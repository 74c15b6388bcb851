"""Component builders for Gemma (Google, 2024): torchtune 0.6.1's ``gemma`` and
``lora_gemma`` signatures, on the shared decoder.

Gemma is the Llama decoder with the embedding scaled by ``sqrt(embed_dim)``, RMSNorms of
the ``x * (1 + w)`` form (stored weight ``w``), a GeGLU MLP (tanh-approximated GELU),
``head_dim`` 256 whatever ``embed_dim / num_heads`` is, and the output tied to the
embedding (``torchtune.models._gemma_description``). The state dict is Llama's names
(``layers.{i}.sa_norm.scale``, ``mlp_norm.scale``, ``attn.q_proj.weight`` ...), without
``output.weight``.
"""

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._description import DecoderDescription
from torchtune.models._gemma_description import gemma_description


@decoder_builder
def gemma(
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
) -> DecoderDescription:
    """Build a Gemma decoder.

    Args:
        vocab_size (int): rows of the embedding (and of the tied output).
        num_layers (int): decoder layers.
        num_heads (int): query heads n_h.
        head_dim (int): per-head size h_d (256 in Gemma; need not be d / n_h).
        num_kv_heads (int): key/value heads (1 in Gemma 2B: multi-query attention).
        embed_dim (int): model width d.
        intermediate_dim (int): GeGLU hidden size.
        max_seq_len (int): longest sequence (RoPE table, KV cache).
        attn_dropout (float): attention-weight dropout while training.
        norm_eps (float): RMSNorm epsilon.
        rope_base (int): RoPE base.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.
    """
    return gemma_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, head_dim=head_dim,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, intermediate_dim=intermediate_dim,
        max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base,
    )


lora_gemma = lora_builder(
    gemma,
    notes=(
        "The output projection is the embedding's weight and takes no adapter "
        "(``apply_lora_to_output=True`` raises)."
    ),
)
