"""RoPE settings from a Hugging Face ``config.json``, read the way transformers reads them.

transformers (v5, ``RotaryEmbeddingConfigMixin.convert_rope_params_to_dict`` and
``standardize_rope_params``) folds the older top-level fields into one dict:

- the dict is ``rope_scaling`` if set, else ``rope_parameters`` (newer checkpoints);
- its type is ``rope_type``, else the legacy ``type``, else ``"default"`` (no scaling);
- ``rope_theta`` and ``partial_rotary_factor`` in the dict win over the top-level keys;
  a missing ``rope_theta`` is 10000 (transformers' default for the architectures we build);
- llama3 and yarn take ``original_max_position_embeddings`` from the top level first
  (Phi-3's habit), then the dict, then ``max_position_embeddings``;
- the rotating features are ``int(head_dim * partial_rotary_factor)``, with ``head_dim``
  falling back to ``hidden_size // num_attention_heads`` when absent or null.

Older transformers (4.x) computed one thing differently: for yarn with
``original_max_position_embeddings`` in ``rope_scaling`` it replaced ``factor`` by
``max_position_embeddings / original_max_position_embeddings``. We follow v5, which uses
``factor`` as written and only falls back to that ratio when ``factor`` is null.
"""

import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from torchtune._errors import UserValueError
from torchtune.modules.position_embeddings import (
    LinearRopeScaling,
    Llama3RopeScaling,
    YarnRopeScaling,
)

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
DEFAULT_ROPE_THETA = 10_000.0

RopeScalingSetting = Union[LinearRopeScaling, Llama3RopeScaling, YarnRopeScaling]


@dataclass(frozen=True)
class RopeSettings:
    """The arguments of ``RotaryPositionalEmbeddings`` that a checkpoint fixes.

    Attributes:
        base (float): theta base (``rope_theta``).
        scaling (Optional[RopeScalingSetting]): frequency scaling; None for "default".
        rotary_dim (int): features of each head that rotate (the head dim unless
            ``partial_rotary_factor`` < 1).
    """

    base: float
    scaling: Optional[RopeScalingSetting]
    rotary_dim: int


def rope_from_hf_config(config: Mapping[str, Any]) -> RopeSettings:
    """Read the RoPE settings of a Hugging Face ``config.json`` (as a dict).

    Args:
        config (Mapping[str, Any]): the parsed config.json.

    Returns:
        RopeSettings: base, scaling and rotary_dim, as transformers would build them.

    Raises:
        UserValueError: for a rope type other than default, linear, llama3 or yarn,
            per-layer-type RoPE parameters, or a missing or invalid field.

    Example:
        >>> rope_from_hf_config({"hidden_size": 64, "num_attention_heads": 4,
        ...                      "rope_theta": 1e6, "rope_scaling": None})
        RopeSettings(base=1000000.0, scaling=None, rotary_dim=16)
    """
    where = "rope_scaling" if config.get("rope_scaling") else "rope_parameters"
    section = f"config.json {where}"
    params = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise UserValueError(f"config.json {where} must be an object or null, got {params!r}")
    nested = sorted(k for k, v in params.items() if isinstance(v, Mapping))
    if nested:
        raise UserValueError(
            f"config.json {where} per layer type ({', '.join(nested)}) is not supported; "
            "give one set of RoPE parameters for all layers"
        )
    rope_type = params.get("rope_type", params.get("type")) or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UserValueError(
            f"config.json {where}.rope_type {rope_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )

    base = _first(params.get("rope_theta"), config.get("rope_theta"), DEFAULT_ROPE_THETA)
    base = float(_positive(base, "rope_theta"))
    rotary_dim = hf_rotary_dim(config, params)

    if rope_type == "default":
        scaling = None
    elif rope_type == "linear":
        scaling = LinearRopeScaling(factor=_required_positive(params, "factor", section))
    elif rope_type == "llama3":
        scaling = Llama3RopeScaling(
            scale_factor=_required_positive(params, "factor", section),
            low_freq_factor=_required_number(params, "low_freq_factor", section),
            high_freq_factor=_required_number(params, "high_freq_factor", section),
            old_context_len=_original_context(config, params, where),
        )
    else:
        scaling = _yarn(config, params, where)
    return RopeSettings(base=base, scaling=scaling, rotary_dim=rotary_dim)


def hf_rotary_dim(config: Mapping[str, Any], params: Optional[Mapping[str, Any]] = None) -> int:
    """``int(head_dim * partial_rotary_factor)``, as transformers truncates it."""
    if params is None:
        params = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    fraction = _first(params.get("partial_rotary_factor"), config.get("partial_rotary_factor"), 1.0)
    fraction = _positive(fraction, "partial_rotary_factor")
    head_dim = config.get("head_dim")
    if head_dim is None:
        hidden_size = _required_positive(config, "hidden_size", "config.json")
        head_dim = hidden_size // _required_positive(config, "num_attention_heads", "config.json")
    head_dim = int(_positive(head_dim, "head_dim"))
    rotary_dim = int(head_dim * fraction)
    if fraction > 1 or rotary_dim <= 0 or rotary_dim % 2:
        raise UserValueError(
            f"config.json partial_rotary_factor ({fraction}) x head_dim ({head_dim}) gives "
            f"{rotary_dim} rotating features; need an even number in 2..{head_dim}"
        )
    return rotary_dim


def _yarn(config: Mapping[str, Any], params: Mapping[str, Any], where: str) -> YarnRopeScaling:
    original = _original_context(config, params, where)
    factor = params.get("factor")
    if factor is None:
        # DeepSeek-V3's convention, kept by transformers: the extension ratio of the contexts.
        max_positions = _required(config, "max_position_embeddings", "config.json")
        factor = _positive(max_positions, "max_position_embeddings") / original
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool):
        raise UserValueError(
            f"config.json {where}.truncate must be true or false, got {truncate!r}"
        )
    optional = {k: params.get(k) for k in ("mscale", "mscale_all_dim", "attention_factor")}
    return YarnRopeScaling(
        factor=_positive(factor, "factor"),
        original_max_position_embeddings=original,
        # transformers reads these with ``or``: null and 0 both mean the paper's 32 and 1
        beta_fast=_number(params.get("beta_fast") or 32.0, "beta_fast"),
        beta_slow=_number(params.get("beta_slow") or 1.0, "beta_slow"),
        truncate=truncate,
        **{k: None if v is None else _number(v, k) for k, v in optional.items()},
    )


def _original_context(config: Mapping[str, Any], params: Mapping[str, Any], where: str) -> int:
    """The pre-training context of llama3 / yarn scaling, by transformers' precedence."""
    value = _first(
        config.get("original_max_position_embeddings"),
        params.get("original_max_position_embeddings"),
        config.get("max_position_embeddings"),
    )
    if value is None:
        raise UserValueError(
            f"config.json {where} needs original_max_position_embeddings "
            "(or max_position_embeddings)"
        )
    return int(_positive(value, "original_max_position_embeddings"))


def _first(*values: Any) -> Any:
    """The first value that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


def _required(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if mapping.get(key) is None:
        raise UserValueError(f"{where} is missing {key!r}, which RoPE needs")
    return mapping[key]


def _required_number(mapping: Mapping[str, Any], key: str, where: str) -> float:
    return _number(_required(mapping, key, where), key)


def _required_positive(mapping: Mapping[str, Any], key: str, where: str) -> float:
    return _positive(_required(mapping, key, where), key)


def _number(value: Any, name: str) -> float:
    # bool is an int subclass; true/false as a number is a mistake in the file
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserValueError(f"config.json RoPE field {name} must be a number, got {value!r}")
    return value


def _positive(value: Any, name: str) -> float:
    if not _number(value, name) > 0:
        raise UserValueError(f"config.json RoPE field {name} must be positive, got {value!r}")
    return value
