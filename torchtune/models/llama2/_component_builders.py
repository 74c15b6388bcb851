"""Component builders: wire Llama 2 from flat, typed arguments.

``llama2`` describes the model with ``llama_description`` (``torchtune/models/_decoder.py``),
the decoder every family shares (the Llama 3.x builders pass it their RoPE scaling and tied
output, Qwen its biases and q/k norm); ``lora_llama2``, derived from it
(``torchtune/models/_builders.py``), is the same model with ``LoRALinear`` where the base
puts ``nn.Linear``. Model builders (``_model_builders.py``) pin the published sizes. The resulting state-dict layout
(full table in docs/design.md)::

    tok_embeddings.weight                 [v, d]
    layers.{i}.sa_norm.scale              [d]
    layers.{i}.attn.{q,k,v,output}_proj.weight
                                          q: [n_h*h_d, d], k/v: [n_kv*h_d, d], output: [d, n_h*h_d]
    layers.{i}.mlp_norm.scale             [d]
    layers.{i}.mlp.w1.weight / w3.weight  [hidden, d]   (gate / up)
    layers.{i}.mlp.w2.weight              [d, hidden]   (down)
    norm.scale                            [d]
    output.weight                         [v, d]        (untied)

q/k rows are in Meta's order (interleaved RoPE pairs), so Meta <-> internal is a rename and
HF <-> internal a rename plus a per-head row permutation (``_convert_weights.py``). LoRA adds
``<module>.lora_a.weight [r, in]`` and ``<module>.lora_b.weight [out, r]`` next to the
unchanged ``<module>.weight``.
"""

from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription


def scale_hidden_dim_for_mlp(dim: int, multiple_of: int = 256) -> int:
    """Meta's SwiGLU hidden size: ``4 * dim * 2 / 3`` rounded up to ``multiple_of``.

    The 2/3 keeps the parameter count of a 3-matrix SwiGLU equal to a 2-matrix 4x MLP
    (meta-llama/llama ``FeedForward.__init__``); 4096 -> 11008, 5120 -> 13824.
    """
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@decoder_builder
def llama2(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    intermediate_dim: Optional[int] = None,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: int = 10_000,
) -> DecoderDescription:
    """Build a Llama 2 decoder (Touvron et al. 2023) with the given sizes.

    Args:
        vocab_size (int): vocabulary size v (rows of the token embedding and the output).
        num_layers (int): number of decoder layers.
        num_heads (int): query heads n_h; must divide ``embed_dim``.
        num_kv_heads (int): key/value heads n_kv; must divide ``num_heads`` (GQA if smaller).
        embed_dim (int): model width d (the token embedding size).
        max_seq_len (int): longest sequence (RoPE table and KV-cache length).
        intermediate_dim (Optional[int]): SwiGLU hidden size; None uses Meta's rule
            (``scale_hidden_dim_for_mlp``).
        attn_dropout (float): attention-weight dropout while training.
        norm_eps (float): RMSNorm epsilon.
        rope_base (int): RoPE base.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.

    Raises:
        ValueError: if the head counts don't divide as required.

    Example:
        >>> model = llama2(vocab_size=512, num_layers=2, num_heads=4, num_kv_heads=2,
        ...                embed_dim=64, max_seq_len=128)
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


lora_llama2 = lora_builder(llama2)
