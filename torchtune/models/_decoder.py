"""The decoder wiring every family shares: Llama 2, Llama 3.x, Qwen 2 / 2.5 and Qwen 3.

``llama_decoder`` builds a ``TransformerDecoder`` from flat, typed arguments; each family's
component builders call it with their own options (RoPE scaling, tied output, q/k/v biases,
q/k norm, head_dim) and pin nothing else. Where a projection is adapted it is a
``LoRALinear``; with a quantized base (QLoRA) the frozen ones are ``FrozenNF4Linear``. The
state-dict layout is in docs/design.md.
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
