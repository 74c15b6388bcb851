"""Component builders for the Llama 3.2 text models (Meta, September 2024).

Llama 3.2 1B/3B are Llama 3.1 (``torchtune.models.llama3_1``) with:

- RoPE ``scale_factor`` 32 (3.1: 8);
- the output projection tied to the token embedding (``modules.TiedLinear``): the state
  dict has ``tok_embeddings.weight`` and no ``output.weight``.
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription
from torchtune.models.llama3._model_utils import scale_hidden_dim_for_mlp
from torchtune.modules import Llama3RopeScaling


@decoder_builder
def llama3_2(
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
    scale_factor: int = 32,
    tie_word_embeddings: bool = True,
) -> DecoderDescription:
    """Build a Llama 3.2 text decoder with the given sizes.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        attn_dropout, rope_base, intermediate_dim, norm_eps: as in
        ``torchtune.models.llama3.llama3``.
        scale_factor (int): RoPE scaling factor of the low frequencies.
        tie_word_embeddings (bool): share the token embedding's weight with the output
            projection.

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
        rope_scaling=Llama3RopeScaling(scale_factor=scale_factor),
        tie_word_embeddings=tie_word_embeddings,
    )


# torchtune 0.6.1's lora_llama3_2 lists intermediate_dim before attn_dropout, as lora_llama3.
lora_llama3_2 = lora_builder(
    llama3_2,
    notes=(
        "A tied output projection is the embedding's weight, which LoRA leaves frozen; an "
        "adapter on it is refused (``apply_lora_to_output`` needs "
        "``tie_word_embeddings=False``)."
    ),
    keyword_order=(
        "vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len",
        "intermediate_dim", "attn_dropout", "norm_eps", "rope_base", "scale_factor",
        "tie_word_embeddings",
    ),
)
