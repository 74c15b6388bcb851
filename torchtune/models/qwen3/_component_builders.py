"""Component builders for Qwen 3 dense models (Alibaba, 2025).

Qwen 3 is the Llama decoder (``torchtune.models._decoder.llama_description``) with:

- an explicit ``head_dim`` (128 at every published size, not ``embed_dim // num_heads``);
- ``RMSNorm(head_dim)`` on each query and key head before RoPE
  (``layers.{i}.attn.q_norm.scale`` / ``k_norm.scale``);
- no q/k/v biases by default (Qwen 2's biases are options);
- RoPE base 1,000,000, RMSNorm epsilon 1e-6; optionally a tied output projection.

RoPE is our interleaved (Meta-layout) one: HF's rotate-half q/k rows, and the q/k norm
scales, are permuted within each head by the checkpoint key map, as for Llama.
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription


@decoder_builder
def qwen3(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    head_dim: Optional[int] = None,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: float = 1_000_000,
    tie_word_embeddings: bool = False,
    q_proj_bias: bool = False,
    k_proj_bias: bool = False,
    v_proj_bias: bool = False,
    q_norm: bool = True,
    k_norm: bool = True,
) -> DecoderDescription:
    """Build a Qwen 3 decoder with the given sizes.

    Args:
        vocab_size (int): vocabulary size v (rows of the token embedding and the output).
        num_layers (int): number of decoder layers.
        num_heads (int): query heads n_h.
        num_kv_heads (int): key/value heads n_kv; must divide ``num_heads``.
        embed_dim (int): model width d (the token embedding size).
        intermediate_dim (int): SwiGLU hidden size.
        max_seq_len (int): longest sequence (RoPE table and KV-cache length).
        head_dim (Optional[int]): h_d; None means ``embed_dim // num_heads``.
        attn_dropout (float): attention-weight dropout while training.
        norm_eps (float): RMSNorm epsilon (also of the q/k norms).
        rope_base (float): RoPE base.
        tie_word_embeddings (bool): share the token embedding's weight with the output
            projection (no ``output.weight`` in the state dict).
        q_proj_bias (bool): a bias on ``q_proj`` (Qwen 3 has none; Qwen 2's layout has one).
        k_proj_bias (bool): a bias on ``k_proj``.
        v_proj_bias (bool): a bias on ``v_proj``.
        q_norm (bool): per-head ``RMSNorm(head_dim)`` on the queries before RoPE.
        k_norm (bool): per-head ``RMSNorm(head_dim)`` on the keys before RoPE.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.

    Raises:
        ValueError: if the head counts don't divide as required or head_dim is odd.
    """
    return llama_description(
        vocab_size=vocab_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        embed_dim=embed_dim,
        max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim,
        attn_dropout=attn_dropout,
        norm_eps=norm_eps,
        rope_base=rope_base,
        tie_word_embeddings=tie_word_embeddings,
        head_dim=head_dim,
        qkv_bias=(q_proj_bias, k_proj_bias, v_proj_bias),
        qk_norm=(q_norm, k_norm),
    )


lora_qwen3 = lora_builder(
    qwen3,
    notes=(
        "The q/k norms, like every base parameter, are frozen by ``set_trainable_params``; "
        "a tied output projection takes no adapter."
    ),
)
