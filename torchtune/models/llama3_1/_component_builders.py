"""Component builders for Llama 3.1 (Meta, July 2024).

Llama 3.1 is Llama 3 (``torchtune.models.llama3``) with Llama 3 RoPE frequency scaling
(``modules.Llama3RopeScaling``: ``scale_factor`` 8, low/high frequency factors 1 and 4,
pre-training context 8192) for its 128K context. The state-dict layout is Llama 2's.
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription
from torchtune.models.llama3._model_utils import scale_hidden_dim_for_mlp
from torchtune.modules import Llama3RopeScaling


@decoder_builder
def llama3_1(
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
    scale_factor: int = 8,
) -> DecoderDescription:
    """Build a Llama 3.1 decoder with the given sizes.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        attn_dropout, rope_base, intermediate_dim, norm_eps: as in
        ``torchtune.models.llama3.llama3``.
        scale_factor (int): RoPE scaling factor of the low frequencies.

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
    )


# torchtune 0.6.1's lora_llama3_1 lists intermediate_dim before attn_dropout, as lora_llama3.
lora_llama3_1 = lora_builder(
    llama3_1,
    keyword_order=(
        "vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len",
        "intermediate_dim", "attn_dropout", "norm_eps", "rope_base", "scale_factor",
    ),
)
