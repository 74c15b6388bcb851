"""Component builders for Mistral (Jiang et al. 2023), torchtune 0.6.1's names and arguments.

Mistral 7B is the shared Llama decoder (``torchtune.models._decoder.llama_description``)
with GQA (8 kv heads), a 14336-wide SwiGLU and, in v0.1, a 4096-token sliding window on
every layer (``sliding_window``; 0.6.1 had no such argument and ignored the window). The
state-dict layout is Llama's (docs/design.md), so the key maps are Llama's too.

``mistral_classifier`` is the same decoder whose output projects to ``num_classes`` scores
instead of the vocabulary: 0.6.1's reward / value model (``mistral_reward_7b``).
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription

# 0.6.1 lists these keyword-only arguments of the LoRA builders in this order.
_LORA_ORDER = [
    "vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len",
    "intermediate_dim", "attn_dropout", "norm_eps", "rope_base", "sliding_window",
]


@decoder_builder
def mistral(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: int = 10_000,
    sliding_window: Optional[int] = None,
) -> DecoderDescription:
    """Build a Mistral decoder with the given sizes.

    Args:
        vocab_size (int): vocabulary size v.
        num_layers (int): number of decoder layers.
        num_heads (int): query heads n_h; must divide ``embed_dim``.
        num_kv_heads (int): key/value heads; must divide ``num_heads``.
        embed_dim (int): model width d.
        intermediate_dim (int): SwiGLU hidden size.
        max_seq_len (int): longest sequence (RoPE table and KV-cache length).
        attn_dropout (float): attention-weight dropout while training.
        norm_eps (float): RMSNorm epsilon.
        rope_base (int): RoPE base.
        sliding_window (Optional[int]): each query attends to the last ``sliding_window``
            positions (Mistral 7B v0.1: 4096); None: full causal attention (v0.2, v0.3).

    Returns:
        TransformerDecoder: the model.

    Example:
        >>> model = mistral(vocab_size=512, num_layers=2, num_heads=4, num_kv_heads=2,
        ...                 embed_dim=64, intermediate_dim=128, max_seq_len=256, sliding_window=32)
    """
    return llama_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, sliding_window=sliding_window,
    )


@decoder_builder
def mistral_classifier(
    num_classes: int,
    *,
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: int = 10_000,
    sliding_window: Optional[int] = None,
) -> DecoderDescription:
    """Build a Mistral decoder whose output is ``num_classes`` scores per position (a
    reward or value head) instead of vocabulary logits.

    Args:
        num_classes (int): outputs of the head (1 for a reward model).
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, intermediate_dim,
        max_seq_len, attn_dropout, norm_eps, rope_base, sliding_window: as in ``mistral``.

    Returns:
        TransformerDecoder: the model; ``output.weight`` is ``[num_classes, d]``.
    """
    return llama_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, sliding_window=sliding_window, num_classes=num_classes,
    )


lora_mistral = lora_builder(mistral, keyword_order=_LORA_ORDER)
lora_mistral_classifier = lora_builder(
    mistral_classifier, keyword_order=["num_classes", *_LORA_ORDER],
)
