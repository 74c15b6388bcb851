"""The one decoder every family builds: a ``DecoderDescription`` in, modules out.

``build_decoder`` turns a description (``torchtune.models._description``) into a
``TransformerDecoder``; ``llama_decoder`` is the description of the Llama-style decoder
from flat, typed arguments, which the Llama 2, Llama 3.x and Qwen 2 / 2.5 / 3 component
builders call with their own options (RoPE scaling, tied output, q/k/v biases, q/k norm,
head_dim). Where a projection is adapted it is a ``LoRALinear``; with a quantized base
(QLoRA) the frozen ones are ``FrozenNF4Linear``. The state-dict layout is in
docs/design.md.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from torchtune._errors import UserValueError
from torchtune.models._description import (
    AttentionDescription,
    DecoderDescription,
    LayerDescription,
    MLPDescription,
    NormDescription,
    RopeDescription,
    uniform_layers,
)
from torchtune.modules import (
    FeedForward,
    MultiHeadAttention,
    RopeScaling,
    RMSNorm,
    RotaryPositionalEmbeddings,
    TiedLinear,
    TransformerDecoder,
    TransformerDecoderLayer,
)
from torchtune.modules.low_precision import FrozenNF4Linear
from torchtune.modules.moe import GroupedExperts, MoE
from torchtune.modules.peft import LoRALinear

LORA_ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "output_proj")


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


@dataclass(frozen=True)
class LoRASettings:
    """Which projections carry adapters, and how (the LoRA builders' arguments).

    Attributes:
        modules (frozenset): any of ``LORA_ATTN_MODULES``, ``"mlp"`` (on a mixture layer:
            the experts), ``"router"`` (a mixture layer's router), ``"output"``.
        rank, alpha, dropout, use_dora, quantize_base: as in ``lora_llama2``.
    """

    modules: frozenset = frozenset()
    rank: int = 0
    alpha: float = 0.0
    dropout: float = 0.0
    use_dora: bool = False
    quantize_base: bool = False


def build_decoder(
    description: DecoderDescription, lora: Optional[LoRASettings] = None
) -> TransformerDecoder:
    """Build the modules a description says, with LoRA adapters where ``lora`` asks.

    Args:
        description (DecoderDescription): the architecture.
        lora (Optional[LoRASettings]): adapters; None: a plain model (with
            ``quantize_base`` only through LoRA, as QLoRA is).

    Returns:
        TransformerDecoder: the model, on the current default device and dtype, with
        ``description`` set.

    Raises:
        ValueError: LoRA asked on a tied output projection.
    """
    lora = lora or LoRASettings()
    if description.tie_word_embeddings and "output" in lora.modules:
        raise UserValueError(
            "apply_lora_to_output is not supported with tied word embeddings: the output "
            "projection is the token embedding's weight"
        )

    def linear(name: str, in_dim: int, out_dim: int, bias: bool = False) -> nn.Module:
        return _linear(
            in_dim, out_dim, name in lora.modules, lora.rank, lora.alpha, lora.dropout, bias,
            quantize_base=lora.quantize_base, use_dora=lora.use_dora,
        )

    def norm(dim: int, spec: NormDescription) -> RMSNorm:
        return RMSNorm(dim, eps=spec.eps, offset=spec.offset)

    d = description.embed_dim
    # One RoPE module per distinct setting: its cos/sin cache depends only on these
    # arguments (131072 positions x 64 pairs x 2 is 64 MiB, not worth repeating per layer).
    ropes: Dict[Tuple[RopeDescription, int], nn.Module] = {}
    layers = []
    for layer in description.layers:
        a, m = layer.attention, layer.mlp
        if (a.rope, a.head_dim) not in ropes:
            ropes[(a.rope, a.head_dim)] = _rope(a.rope, a.head_dim, description.max_seq_len)
        extra = {
            k: v for k, v in
            (("scale", a.scale), ("softcap", a.softcap), ("sliding_window", a.sliding_window))
            if v is not None
        }
        attn = MultiHeadAttention(
            embed_dim=d,
            num_heads=a.num_heads,
            num_kv_heads=a.num_kv_heads,
            head_dim=a.head_dim,
            q_proj=linear("q_proj", d, a.num_heads * a.head_dim, a.q_bias),
            k_proj=linear("k_proj", d, a.num_kv_heads * a.head_dim, a.k_bias),
            v_proj=linear("v_proj", d, a.num_kv_heads * a.head_dim, a.v_bias),
            output_proj=linear("output_proj", a.num_heads * a.head_dim, d, a.o_bias),
            pos_embeddings=ropes[(a.rope, a.head_dim)],
            max_seq_len=description.max_seq_len,
            attn_dropout=description.attn_dropout,
            q_norm=None if a.q_norm is None else norm(a.head_dim, a.q_norm),
            k_norm=None if a.k_norm is None else norm(a.head_dim, a.k_norm),
            **extra,
        )
        if m.num_experts:
            mlp = _moe(d, m, lora)
        else:
            mlp = FeedForward(
                w1=linear("mlp", d, m.hidden_dim, m.bias),
                w2=linear("mlp", m.hidden_dim, d, m.bias),
                w3=linear("mlp", d, m.hidden_dim, m.bias),
                activation=m.activation,
            )
        layers.append(
            TransformerDecoderLayer(
                attn=attn,
                mlp=mlp,
                sa_norm=norm(d, layer.norm),
                mlp_norm=norm(d, layer.norm),
                sa_scale=norm(d, layer.norm) if layer.post_norms else None,
                mlp_scale=norm(d, layer.norm) if layer.post_norms else None,
            )
        )
    tok_embeddings = nn.Embedding(description.vocab_size, d)
    if description.tie_word_embeddings:
        output = TiedLinear(tok_embeddings)
    elif "output" in lora.modules:
        output = linear("output", d, description.output_dim)
    else:
        # A frozen output stays full precision even under QLoRA, as in torchtune 0.6.1:
        # the logits are the most quantization-sensitive product of the model.
        output = nn.Linear(d, description.output_dim, bias=False)
    model = TransformerDecoder(
        tok_embeddings=tok_embeddings,
        layers=layers,
        max_seq_len=description.max_seq_len,
        norm=norm(d, description.norm),
        output=output,
        embed_scale=description.embed_scale,
        final_softcap=description.final_softcap,
    )
    model.description = description
    return model


def _moe(d: int, m: MLPDescription, lora: LoRASettings) -> MoE:
    """A mixture-of-experts MLP: the router adapted when ``"router"`` is asked (a
    full-precision ``LoRALinear`` even under QLoRA: [E, d] is small and decides every
    routing), the experts when ``"mlp"`` is (stacked adapters), the experts' base in NF4
    under ``quantize_base``."""
    adapt_router, adapt_experts = "router" in lora.modules, "mlp" in lora.modules
    if lora.use_dora and (adapt_router or adapt_experts):
        raise UserValueError(
            "use_dora: DoRA on a mixture-of-experts router or experts is not supported (peft "
            "has no equal); set apply_lora_to_router=False and apply_lora_to_mlp=False"
        )
    if adapt_router:
        router = LoRALinear(d, m.num_experts, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout)
    else:
        router = nn.Linear(d, m.num_experts, bias=False)
    experts = GroupedExperts(
        d, m.hidden_dim, m.num_experts, m.activation,
        lora_rank=lora.rank if adapt_experts else 0, lora_alpha=lora.alpha,
        lora_dropout=lora.dropout, quantize_base=lora.quantize_base,
    )
    return MoE(
        dim=d, hidden_dim=m.hidden_dim, num_experts=m.num_experts,
        experts_per_token=m.experts_per_token, norm_topk_prob=m.norm_topk_prob,
        router=router, experts=experts,
    )


def _rope(rope: RopeDescription, head_dim: int, max_seq_len: int) -> nn.Module:
    extra = {} if rope.rotary_dim in (None, head_dim) else {"rotary_dim": rope.rotary_dim}
    return RotaryPositionalEmbeddings(
        head_dim, max_seq_len, rope.base, scaling=rope.scaling, **extra
    )


def llama_description(
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
    rope_base: float,
    rope_scaling: Optional[RopeScaling] = None,
    tie_word_embeddings: bool = False,
    head_dim: Optional[int] = None,
    qkv_bias: Union[bool, Sequence[bool]] = False,
    qk_norm: Union[bool, Sequence[bool]] = False,
    sliding_window: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> DecoderDescription:
    """The Llama-style decoder as a description: every layer alike, pre-norm RMSNorm,
    SwiGLU, RoPE, optional q/k/v biases, per-head q/k RMSNorm and explicit head_dim.

    Args: as in ``llama_decoder``, and
        sliding_window (Optional[int]): every layer's attention window (Mistral 7B v0.1:
            4096); None: full causal attention.
        num_classes (Optional[int]): a classifier head of this many outputs instead of
            the vocabulary projection.

    Raises:
        ValueError: if the head counts don't divide as required.
    """
    if head_dim is None:
        head_dim = _check_dims(embed_dim, num_heads, num_kv_heads)
    q_bias, k_bias, v_bias = _flags(qkv_bias, 3, "qkv_bias")
    q_norm, k_norm = _flags(qk_norm, 2, "qk_norm")
    attention = AttentionDescription(
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        rope=RopeDescription(base=rope_base, scaling=rope_scaling),
        q_bias=q_bias,
        k_bias=k_bias,
        v_bias=v_bias,
        q_norm=NormDescription(norm_eps) if q_norm else None,
        k_norm=NormDescription(norm_eps) if k_norm else None,
        sliding_window=sliding_window,
    )
    layer = LayerDescription(
        attention=attention,
        mlp=MLPDescription(hidden_dim=hidden_dim),
        norm=NormDescription(norm_eps),
    )
    return DecoderDescription(
        vocab_size=vocab_size,
        embed_dim=embed_dim,
        max_seq_len=max_seq_len,
        layers=uniform_layers(layer, num_layers),
        norm=NormDescription(norm_eps),
        tie_word_embeddings=tie_word_embeddings,
        attn_dropout=attn_dropout,
        num_classes=num_classes,
    )


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
    rope_base: float,
    rope_scaling: Optional[RopeScaling] = None,
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
    """Build the Llama-style decoder (``llama_description``, then ``build_decoder``).

    Llama 2 and Llama 3.x differ only in the options: RoPE base and scaling, tied output
    and sizes; each family's builder passes its own. Qwen 2 / 2.5 add q/k/v biases and
    Qwen 3 per-head q/k RMSNorm and an explicit head_dim.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        attn_dropout, norm_eps, rope_base: as in ``llama2``.
        hidden_dim (int): SwiGLU hidden size (already resolved by the family's rule).
        rope_scaling (Optional[RopeScaling]): RoPE frequency scaling (``Llama3RopeScaling``
            for Llama 3.1+; any of ``torchtune.modules``' scalings).
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
    description = llama_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
        hidden_dim=hidden_dim, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, rope_scaling=rope_scaling,
        tie_word_embeddings=tie_word_embeddings, head_dim=head_dim, qkv_bias=qkv_bias,
        qk_norm=qk_norm,
    )
    lora = LoRASettings(
        modules=lora_modules, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
        use_dora=use_dora, quantize_base=quantize_base,
    )
    return build_decoder(description, lora)


def lora_module_names(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool,
    apply_lora_to_output: bool,
    apply_lora_to_router: bool = False,
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
    if apply_lora_to_router:
        names.add("router")
    return frozenset(names)
