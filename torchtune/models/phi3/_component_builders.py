"""Component builders for Phi-3 (Abdin et al. 2024), torchtune 0.6.1's names and arguments.

Phi-3 is the shared Llama decoder (``torchtune.models._decoder.llama_description``): pre-norm
RMSNorm, SwiGLU, RoPE, here with a sliding window where the checkpoint has one (Phi-3 mini 4k:
2047). Its checkpoints fuse q/k/v into one ``qkv_proj`` and gate/up into one ``gate_up_proj``;
internally they are the separate projections every other family has, so LoRA, QLoRA and the
attention kernels are the shared ones, and the key maps split and join them
(``_convert_weights.py``).
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription


@decoder_builder
def phi3(
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
    """Build a Phi-3 decoder with the given sizes.

    Args:
        vocab_size (int): vocabulary size v.
        num_layers (int): number of decoder layers.
        num_heads (int): query heads; must divide ``embed_dim``.
        num_kv_heads (int): key/value heads; must divide ``num_heads``.
        embed_dim (int): model width d.
        intermediate_dim (int): SwiGLU hidden size.
        max_seq_len (int): longest sequence (RoPE table and KV-cache length).
        attn_dropout (float): attention-weight dropout while training.
        norm_eps (float): RMSNorm epsilon.
        rope_base (int): RoPE base.
        sliding_window (Optional[int]): each query attends to the last ``sliding_window``
            positions (Phi-3 mini 4k: 2047); None: full causal attention.

    Returns:
        TransformerDecoder: the model.
    """
    return llama_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, sliding_window=sliding_window,
    )


lora_phi3 = lora_builder(phi3)
