"""Component builders: wire Llama 2 from flat, typed arguments.

``llama2`` builds the base model and ``lora_llama2`` the same model with ``LoRALinear``
where the base builder puts ``nn.Linear``. Both call ``llama_decoder``
(``torchtune/models/_decoder.py``), the wiring every family shares (the Llama 3.x builders
pass it their RoPE scaling and tied output, Qwen its biases and q/k norm). Model
builders (``_model_builders.py``) pin the published sizes. The resulting state-dict layout
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

from typing import List, Optional

from torchtune.models._decoder import llama_decoder, lora_module_names
from torchtune.modules import TransformerDecoder


def scale_hidden_dim_for_mlp(dim: int, multiple_of: int = 256) -> int:
    """Meta's SwiGLU hidden size: ``4 * dim * 2 / 3`` rounded up to ``multiple_of``.

    The 2/3 keeps the parameter count of a 3-matrix SwiGLU equal to a 2-matrix 4x MLP
    (meta-llama/llama ``FeedForward.__init__``); 4096 -> 11008, 5120 -> 13824.
    """
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


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
) -> TransformerDecoder:
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
    return llama_decoder(
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


def lora_llama2(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    *,
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
    lora_rank: int,
    lora_alpha: float,
    lora_dropout: float = 0.0,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Build Llama 2 with LoRA adapters (Hu et al. 2021) on the chosen linear layers.

    Same sizes and state-dict names as ``llama2``, plus ``lora_a``/``lora_b`` under each
    adapted linear, so a base checkpoint loads with only adapter keys missing.

    Args:
        lora_attn_modules (List[str]): any of ``q_proj``, ``k_proj``, ``v_proj``,
            ``output_proj``.
        apply_lora_to_mlp (bool): also adapt w1, w2 and w3.
        apply_lora_to_output (bool): also adapt the final ``output`` projection.
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        intermediate_dim, attn_dropout, norm_eps, rope_base: as in ``llama2``.
        lora_rank (int): adapter rank r (``lora_a`` is [r, in], ``lora_b`` [out, r]).
        lora_alpha (float): the update is scaled by ``alpha / r``.
        lora_dropout (float): dropout on the adapter input while training.
        use_dora (bool): DoRA adapters (a ``magnitude`` per adapted linear); call each
            ``LoRALinear.initialize_dora_magnitude()`` after loading the base weights.
        quantize_base (bool): QLoRA: every frozen linear of the decoder layers (adapted or
            not) stores its weight as NF4, quantized as the checkpoint loads; the embedding,
            norms and a non-adapted output stay full precision.

    Returns:
        TransformerDecoder: the LoRA model (all parameters trainable until
        ``set_trainable_params`` is called).

    Raises:
        ValueError: on an unknown module name in ``lora_attn_modules`` or bad head counts.
    """
    return llama_decoder(
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
        lora_modules=lora_module_names(
            lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output
        ),
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
    )
