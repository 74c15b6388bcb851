"""What a decoder is, as data: the description every model builder produces.

An architecture is a ``DecoderDescription``: a model-level part (vocabulary, width, tied
output, final norm, embedding scale, final-logit soft-cap) and one ``LayerDescription`` per
layer, so layers may differ (sliding-window and global layers, later mixture-of-experts
layers). The family builders (``llama3_2``, ``qwen3``, ...) and ``auto_model`` (from a
model's ``config.json``) produce one; ``torchtune.models._decoder.build_decoder`` turns it
into modules. A family is then its translation into a description, its key maps and its
tokenizer, never a copy of the decoder.

Every field here changes the model's math except ``max_seq_len`` and ``attn_dropout``,
which only size the RoPE table and KV cache, or act while training. ``differences``
compares two descriptions field by field: the HF checkpointer uses it to refuse a
checkpoint whose ``config.json`` describes another model than the one built.

The growth rule (docs/design.md): a difference between architectures becomes a field here
and an option of the shared modules when it is a variant of the same computation (a bias,
a norm form, a scale, a window); a family gets its own block only when its computation
differs in kind (a mixture-of-experts MLP is a new MLP kind in the same slot).
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

from torchtune._errors import UserValueError


@dataclass(frozen=True)
class NormDescription:
    """An RMSNorm: ``x / rms(x) * w``, or ``* (1 + w)`` (``offset=1.0``; Gemma's form, whose
    stored weight starts at zero).

    Attributes:
        eps (float): added to the mean square.
        offset (float): added to the learned scale before multiplying (0.0 or 1.0).
    """

    eps: float
    offset: float = 0.0


@dataclass(frozen=True)
class RopeDescription:
    """Rotary embeddings of one layer.

    Attributes:
        base (float): theta base.
        scaling (Optional[Any]): a frequency scaling from ``torchtune.modules``
            (``Llama3RopeScaling`` and the others there); None keeps the frequencies.
        rotary_dim (Optional[int]): features of each head that rotate (partial rotary);
            None: all of ``head_dim``.
    """

    base: float
    scaling: Optional[Any] = None
    rotary_dim: Optional[int] = None


@dataclass(frozen=True)
class AttentionDescription:
    """Self-attention of one layer.

    Attributes:
        num_heads (int): query heads n_h.
        num_kv_heads (int): key/value heads n_kv (divides n_h; GQA when smaller).
        head_dim (int): per-head size h_d (need not be d / n_h).
        rope (RopeDescription): positions.
        q_bias, k_bias, v_bias, o_bias (bool): biases on the projections.
        q_norm (Optional[NormDescription]): per-head RMSNorm on the queries before RoPE
            (Qwen 3, Gemma 3); None: none.
        k_norm (Optional[NormDescription]): the same on the keys.
        scale (Optional[float]): factor on q.k; None is ``1 / sqrt(head_dim)``.
        softcap (Optional[float]): attention-logit soft-cap ``c * tanh(s / c)``.
        sliding_window (Optional[int]): each query sees the last ``sliding_window`` keys,
            itself included; None: all earlier keys.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeDescription
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    q_norm: Optional[NormDescription] = None
    k_norm: Optional[NormDescription] = None
    scale: Optional[float] = None
    softcap: Optional[float] = None
    sliding_window: Optional[int] = None

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise UserValueError(
                f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})"
            )
        if self.head_dim <= 0 or self.head_dim % 2:
            raise UserValueError(
                f"head_dim ({self.head_dim}) must be positive and even (RoPE rotates pairs)"
            )
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise UserValueError(f"sliding_window ({self.sliding_window}) must be positive")
        if self.softcap is not None and self.softcap <= 0:
            raise UserValueError(f"attention softcap ({self.softcap}) must be positive")


MLP_ACTIVATIONS = ("silu", "gelu_tanh")


@dataclass(frozen=True)
class MLPDescription:
    """A gated MLP ``down(act(gate(x)) * up(x))``, or a mixture of such experts.

    Attributes:
        hidden_dim (int): the gate/up width (of each expert in a mixture).
        activation (str): ``"silu"`` (SwiGLU: Llama, Qwen) or ``"gelu_tanh"`` (GeGLU: Gemma).
        bias (bool): biases on the three projections.
        num_experts (int): 0: a dense MLP; else a top-k routed mixture of this many experts
            (``torchtune.modules.moe.MoE``: Qwen 3 MoE, Mixtral).
        experts_per_token (int): k of the mixture.
        norm_topk_prob (bool): the k routing weights are renormalised to sum to one.
    """

    hidden_dim: int
    activation: str = "silu"
    bias: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    norm_topk_prob: bool = False

    def __post_init__(self) -> None:
        if self.activation not in MLP_ACTIVATIONS:
            raise UserValueError(
                f"MLP activation {self.activation!r} is not supported; supported: {list(MLP_ACTIVATIONS)}"
            )
        if self.num_experts and not 1 <= self.experts_per_token <= self.num_experts:
            raise UserValueError(
                f"experts_per_token ({self.experts_per_token}) must be in [1, num_experts "
                f"({self.num_experts})]"
            )
        if self.num_experts and (self.bias or self.activation != "silu"):
            raise UserValueError("mixture-of-experts MLPs are bias-free SwiGLU experts")


@dataclass(frozen=True)
class LayerDescription:
    """One decoder layer: norm, attention, residual; norm, MLP, residual.

    Attributes:
        attention (AttentionDescription): the self-attention.
        mlp (MLPDescription): the feed-forward block.
        norm (NormDescription): the norms of the layer.
        post_norms (bool): also a norm after attention and after the MLP, before each
            residual add ("sandwich" norms: Gemma 2 and 3), state dict ``sa_scale`` and
            ``mlp_scale`` as in torchtune 0.6.1's Gemma 2.
    """

    attention: AttentionDescription
    mlp: MLPDescription
    norm: NormDescription
    post_norms: bool = False


@dataclass(frozen=True)
class DecoderDescription:
    """A decoder-only transformer.

    Attributes:
        vocab_size (int): rows of the token embedding and the output projection.
        embed_dim (int): model width d.
        max_seq_len (int): longest sequence (RoPE table, KV cache); not part of the math.
        layers (Tuple[LayerDescription, ...]): one per layer, in order.
        norm (NormDescription): the final norm.
        tie_word_embeddings (bool): the output projection is the token embedding's weight.
        embed_scale (Optional[float]): the embeddings are multiplied by it (Gemma:
            ``sqrt(d)``, in the embedding's dtype); None: not scaled.
        final_softcap (Optional[float]): logits become ``c * tanh(logits / c)`` (Gemma 2);
            the fused and chunked losses, which apply the output projection themselves,
            apply it too.
        attn_dropout (float): attention-weight dropout while training; not part of the math.
        num_classes (Optional[int]): the output projects to this many scores instead of
            the vocabulary (a reward or value head: torchtune 0.6.1's ``*_classifier``
            builders); None: a language model.
        router_aux_loss_coef (float): the weight training gives a mixture-of-experts
            model's load-balancing loss (config.json's ``router_aux_loss_coef``); not part
            of the math.
    """

    vocab_size: int
    embed_dim: int
    max_seq_len: int
    layers: Tuple[LayerDescription, ...]
    norm: NormDescription
    tie_word_embeddings: bool = False
    embed_scale: Optional[float] = None
    final_softcap: Optional[float] = None
    attn_dropout: float = 0.0
    num_classes: Optional[int] = None
    router_aux_loss_coef: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise UserValueError("a decoder needs at least one layer (num_layers >= 1)")
        if self.final_softcap is not None and self.final_softcap <= 0:
            raise UserValueError(f"final_softcap ({self.final_softcap}) must be positive")
        if self.num_classes is not None and (self.num_classes < 1 or self.tie_word_embeddings):
            raise UserValueError(
                f"num_classes ({self.num_classes}) must be >= 1, with an untied output"
            )

    @property
    def output_dim(self) -> int:
        """Rows of the output projection: ``num_classes``, else ``vocab_size``."""
        return self.num_classes or self.vocab_size

    @property
    def num_layers(self) -> int:
        """Number of layers."""
        return len(self.layers)


# Fields that size buffers or act only while training: two descriptions differing only
# there describe the same function of the weights.
NOT_MATH = frozenset({"max_seq_len", "attn_dropout", "router_aux_loss_coef"})


def _flatten(value: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """``(dotted name, leaf value)`` of a description; layers as ``layers[i]``."""
    if _is_description(value):
        for f in dataclasses.fields(value):
            yield from _flatten(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(value, tuple) and value and _is_description(value[0]):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _is_description(value: Any) -> bool:
    return type(value) in (
        NormDescription, RopeDescription, AttentionDescription, MLPDescription,
        LayerDescription, DecoderDescription,
    )


def differences(ours: DecoderDescription, theirs: DecoderDescription) -> List[Tuple[str, Any, Any]]:
    """The math-changing fields where two descriptions differ: ``(name, ours, theirs)``,
    names dotted (``layers[3].attention.rope.base``), in field order. A different number of
    layers is one difference, ``num_layers``."""
    if ours.num_layers != theirs.num_layers:
        return [("num_layers", ours.num_layers, theirs.num_layers)]
    mine = dict(_flatten(ours, ""))
    other = dict(_flatten(theirs, ""))
    return [
        (name, mine[name], other[name])
        for name in mine
        if name not in NOT_MATH and mine[name] != other[name]
    ]


def uniform_layers(layer: LayerDescription, num_layers: int) -> Tuple[LayerDescription, ...]:
    """``num_layers`` copies of one layer description (every family today)."""
    if num_layers <= 0:
        raise UserValueError(f"num_layers ({num_layers}) must be at least 1")
    return (layer,) * num_layers


__all__ = [
    "AttentionDescription",
    "DecoderDescription",
    "LayerDescription",
    "MLPDescription",
    "NormDescription",
    "RopeDescription",
    "differences",
    "uniform_layers",
]
