"""Component builders: wire Llama 2 from flat, typed arguments.

``llama2`` builds the base model and ``lora_llama2`` the same model with ``LoRALinear``
where the base builder puts ``nn.Linear``. Both call ``llama_decoder``, the wiring every Llama
generation shares (the Llama 3.x builders pass it their RoPE scaling and tied output). Model
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

from typing import List, Optional, Sequence, Tuple, Union

from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules import (
    FeedForward,
    Llama3RopeScaling,
    MultiHeadAttention,
    RMSNorm,
    RotaryPositionalEmbeddings,
    TiedLinear,
    TransformerDecoder,
    TransformerDecoderLayer,
)
from torchtune.modules.low_precision import FrozenNF4Linear
from torchtune.modules.peft import LoRALinear

LORA_ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "output_proj")


def scale_hidden_dim_for_mlp(dim: int, multiple_of: int = 256) -> int:
    """Meta's SwiGLU hidden size: ``4 * dim * 2 / 3`` rounded up to ``multiple_of``.

    The 2/3 keeps the parameter count of a 3-matrix SwiGLU equal to a 2-matrix 4x MLP
    (meta-llama/llama ``FeedForward.__init__``); 4096 -> 11008, 5120 -> 13824.
    """
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _check_dims(embed_dim: int, num_heads: int, num_kv_heads: int) -> int:
    if num_heads <= 0 or embed_dim % num_heads:
        raise UserValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
    if num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise UserValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
    return embed_dim // num_heads


def _linear(
    in_dim: int,
    out_dim: int,
    lora: bool,
    rank: int = 0,
    alpha: float = 0.0,
    dropout: float = 0.0,
    bias: bool = False,
    quantize_base: bool = False,
    use_dora: bool = False,
) -> nn.Module:
    """One projection: ``LoRALinear`` where adapted, else ``nn.Linear``, or a frozen
    ``FrozenNF4Linear`` when the base is quantized (QLoRA keeps every frozen layer 4-bit)."""
    if lora:
        return LoRALinear(
            in_dim, out_dim, rank=rank, alpha=alpha, dropout=dropout, use_bias=bias,
            quantize_base=quantize_base, use_dora=use_dora,
        )
    if quantize_base:
        return FrozenNF4Linear(in_dim, out_dim, bias=bias)
    return nn.Linear(in_dim, out_dim, bias=bias)


def _flags(value: Union[bool, Sequence[bool]], n: int, name: str) -> Tuple[bool, ...]:
    """One bool for all, or one per item (q, k[, v])."""
    if isinstance(value, bool):
        return (value,) * n
    flags = tuple(bool(v) for v in value)
    if len(flags) != n:
        raise UserValueError(f"{name} takes a bool or {n} bools, got {value!r}")
    return flags


def llama_decoder(
    *,
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    hidden_dim: int,
    attn_dropout: float,
    norm_eps: float,
    rope_base: int,
    rope_scaling: Optional[Llama3RopeScaling] = None,
    tie_word_embeddings: bool = False,
    head_dim: Optional[int] = None,
    qkv_bias: Union[bool, Sequence[bool]] = False,
    qk_norm: Union[bool, Sequence[bool]] = False,
    lora_modules: frozenset = frozenset(),
    lora_rank: int = 0,
    lora_alpha: float = 0.0,
    lora_dropout: float = 0.0,
    quantize_base: bool = False,
    use_dora: bool = False,
) -> TransformerDecoder:
    """The Llama decoder wiring shared by every Llama generation's component builders.

    Llama 2 and Llama 3.x differ only in the options: RoPE base and scaling, tied output
    and sizes; each family's builder passes its own. Qwen 2 / 2.5 add q/k/v biases and
    Qwen 3 per-head q/k RMSNorm and an explicit head_dim.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        attn_dropout, norm_eps, rope_base: as in ``llama2``.
        hidden_dim (int): SwiGLU hidden size (already resolved by the family's rule).
        rope_scaling (Optional[Llama3RopeScaling]): RoPE frequency scaling (Llama 3.1+).
        tie_word_embeddings (bool): the output projection is a ``TiedLinear`` sharing
            ``tok_embeddings.weight`` (no ``output.weight`` in the state dict).
        head_dim (Optional[int]): per-head size h_d; None means ``embed_dim // num_heads``
            (which must then divide). q is ``[n_h * h_d, d]``, output ``[d, n_h * h_d]``.
        qkv_bias (Union[bool, Sequence[bool]]): biases on the q, k, v projections (one bool
            for all three or three bools), state dict ``attn.{q,k,v}_proj.bias``; never on
            ``output_proj``.
        qk_norm (Union[bool, Sequence[bool]]): ``RMSNorm(h_d, norm_eps)`` on each query /
            key head before RoPE (one bool or two), state dict ``attn.{q,k}_norm.scale``.
        lora_modules (frozenset): names whose linears become ``LoRALinear``: any of
            ``LORA_ATTN_MODULES``, ``"mlp"``, ``"output"`` (see ``lora_module_names``).
        lora_rank, lora_alpha, lora_dropout, quantize_base, use_dora: as in ``lora_llama2``.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.

    Raises:
        ValueError: if the head counts don't divide as required, or LoRA is asked on a
            tied output projection.
    """
    if head_dim is None:
        head_dim = _check_dims(embed_dim, num_heads, num_kv_heads)
    else:
        if head_dim <= 0 or head_dim % 2:
            raise UserValueError(f"head_dim ({head_dim}) must be positive and even (RoPE pairs)")
        if num_kv_heads <= 0 or num_heads <= 0 or num_heads % num_kv_heads:
            raise UserValueError(
                f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})"
            )
    q_bias, k_bias, v_bias = _flags(qkv_bias, 3, "qkv_bias")
    q_norm, k_norm = _flags(qk_norm, 2, "qk_norm")
    if tie_word_embeddings and "output" in lora_modules:
        raise UserValueError(
            "apply_lora_to_output is not supported with tied word embeddings: the output "
            "projection is the token embedding's weight"
        )

    def linear(name: str, in_dim: int, out_dim: int, bias: bool = False) -> nn.Module:
        return _linear(
            in_dim, out_dim, name in lora_modules, lora_rank, lora_alpha, lora_dropout, bias,
            quantize_base=quantize_base, use_dora=use_dora,
        )

    # One RoPE module for all layers: its cos/sin cache depends only on these arguments
    # (131072 positions x 64 pairs x 2 is 64 MiB, not worth repeating per layer).
    rope = RotaryPositionalEmbeddings(head_dim, max_seq_len, rope_base, scaling=rope_scaling)
    layers = []
    for _ in range(num_layers):
        attn = MultiHeadAttention(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            q_proj=linear("q_proj", embed_dim, num_heads * head_dim, q_bias),
            k_proj=linear("k_proj", embed_dim, num_kv_heads * head_dim, k_bias),
            v_proj=linear("v_proj", embed_dim, num_kv_heads * head_dim, v_bias),
            output_proj=linear("output_proj", num_heads * head_dim, embed_dim),
            pos_embeddings=rope,
            max_seq_len=max_seq_len,
            attn_dropout=attn_dropout,
            q_norm=RMSNorm(head_dim, eps=norm_eps) if q_norm else None,
            k_norm=RMSNorm(head_dim, eps=norm_eps) if k_norm else None,
        )
        mlp = FeedForward(
            w1=linear("mlp", embed_dim, hidden_dim),
            w2=linear("mlp", hidden_dim, embed_dim),
            w3=linear("mlp", embed_dim, hidden_dim),
        )
        layers.append(
            TransformerDecoderLayer(
                attn=attn,
                mlp=mlp,
                sa_norm=RMSNorm(embed_dim, eps=norm_eps),
                mlp_norm=RMSNorm(embed_dim, eps=norm_eps),
            )
        )
    tok_embeddings = nn.Embedding(vocab_size, embed_dim)
    if tie_word_embeddings:
        output = TiedLinear(tok_embeddings)
    elif "output" in lora_modules:
        output = linear("output", embed_dim, vocab_size)
    else:
        # A frozen output stays full precision even under QLoRA, as in torchtune 0.6.1:
        # the logits are the most quantization-sensitive product of the model.
        output = nn.Linear(embed_dim, vocab_size, bias=False)
    return TransformerDecoder(
        tok_embeddings=tok_embeddings,
        layers=layers,
        max_seq_len=max_seq_len,
        norm=RMSNorm(embed_dim, eps=norm_eps),
        output=output,
    )


def lora_module_names(
    lora_attn_modules: List[str], apply_lora_to_mlp: bool, apply_lora_to_output: bool
) -> frozenset:
    """The ``lora_modules`` argument of ``llama_decoder`` from the LoRA builders' arguments.

    Raises:
        ValueError: on an unknown module name in ``lora_attn_modules``.
    """
    unknown = sorted(set(lora_attn_modules) - set(LORA_ATTN_MODULES))
    if unknown:
        raise UserValueError(
            f"Unknown lora_attn_modules {unknown}; expected any of {list(LORA_ATTN_MODULES)}"
        )
    names = set(lora_attn_modules)
    if apply_lora_to_mlp:
        names.add("mlp")
    if apply_lora_to_output:
        names.add("output")
    return frozenset(names)


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
        vocab_size (int): v.
        num_layers (int): number of decoder layers.
        num_heads (int): query heads n_h; must divide ``embed_dim``.
        num_kv_heads (int): key/value heads n_kv; must divide ``num_heads`` (GQA if smaller).
        embed_dim (int): d.
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
        lora_rank (int): r.
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
