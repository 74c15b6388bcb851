"""Component builders for Llama 3 (Meta, April 2024).

Llama 3 is the shared Llama decoder (``torchtune.models._decoder.llama_description``) with:

- RoPE base 500000 (Llama 2: 10000);
- GQA in every size (a property of the model builders' head counts, not of the wiring);
- the default SwiGLU hidden size of ``_model_utils.scale_hidden_dim_for_mlp``.

The state-dict layout is Llama 2's (docs/design.md).
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription
from torchtune.models.llama3._model_utils import scale_hidden_dim_for_mlp


@decoder_builder
def llama3(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    rope_base: int = 500_000,
    intermediate_dim: Optional[int] = None,
    norm_eps: float = 1e-5,
) -> DecoderDescription:
    """Build a Llama 3 decoder with the given sizes.

    Args:
        vocab_size (int): vocabulary size v (rows of the token embedding and the output).
        num_layers (int): number of decoder layers.
        num_heads (int): query heads n_h; must divide ``embed_dim``.
        num_kv_heads (int): key/value heads n_kv; must divide ``num_heads``.
        embed_dim (int): model width d (the token embedding size).
        max_seq_len (int): longest sequence (RoPE table and KV-cache length).
        attn_dropout (float): attention-weight dropout while training.
        rope_base (int): RoPE base.
        intermediate_dim (Optional[int]): SwiGLU hidden size; None uses
            ``scale_hidden_dim_for_mlp(embed_dim)``.
        norm_eps (float): RMSNorm epsilon.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.

    Raises:
        ValueError: if the head counts don't divide as required.
    """
    return llama_description(
        vocab_size=vocab_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        embed_dim=embed_dim,
        max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim or scale_hidden_dim_for_mlp(embed_dim),
        attn_dropout=attn_dropout,
        norm_eps=norm_eps,
        rope_base=rope_base,
    )


# torchtune 0.6.1's lora_llama3 lists intermediate_dim before attn_dropout and rope_base last.
lora_llama3 = lora_builder(
    llama3,
    keyword_order=(
        "vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len",
        "intermediate_dim", "attn_dropout", "norm_eps", "rope_base",
    ),
)
