"""Component builders for Qwen 2 / Qwen 2.5 (Alibaba, 2024).

Qwen 2 is the Llama decoder (``torchtune.models._decoder.llama_description``) with:

- biases on the q, k and v projections (``layers.{i}.attn.{q,k,v}_proj.bias``; none on
  ``output_proj``);
- RoPE base 1,000,000 and RMSNorm epsilon 1e-6;
- optionally the output projection tied to the token embedding (the small sizes).

RoPE is our interleaved (Meta-layout) one: HF's rotate-half q/k rows *and* q/k bias
entries are permuted within each head by the checkpoint key map, as for Llama.
"""

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription


@decoder_builder
def qwen2(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: float = 1_000_000,
    tie_word_embeddings: bool = False,
) -> DecoderDescription:
    """Build a Qwen 2 / 2.5 decoder with the given sizes.

    Args:
        vocab_size (int): vocabulary size v (rows of the token embedding and the output).
        num_layers (int): number of decoder layers.
        num_heads (int): query heads n_h; must divide ``embed_dim``.
        num_kv_heads (int): key/value heads n_kv; must divide ``num_heads``.
        embed_dim (int): model width d (the token embedding size).
        intermediate_dim (int): SwiGLU hidden size.
        max_seq_len (int): longest sequence (RoPE table and KV-cache length).
        attn_dropout (float): attention-weight dropout while training.
        norm_eps (float): RMSNorm epsilon.
        rope_base (float): RoPE base.
        tie_word_embeddings (bool): share the token embedding's weight with the output
            projection (no ``output.weight`` in the state dict).

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
        hidden_dim=intermediate_dim,
        attn_dropout=attn_dropout,
        norm_eps=norm_eps,
        rope_base=rope_base,
        tie_word_embeddings=tie_word_embeddings,
        qkv_bias=True,
    )


lora_qwen2 = lora_builder(
    qwen2,
    notes=(
        "The q/k/v biases stay on the (frozen) base layer of each ``LoRALinear`` under the "
        "same name, ``...q_proj.bias``. A tied output projection takes no adapter."
    ),
)
