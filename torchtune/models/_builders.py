"""Builders derived from one description per architecture, so LoRA twins restate nothing.

A family writes each architecture once, as a function from its arguments to a
``DecoderDescription`` (``torchtune.models._description``). The rest is derived here:

- ``@decoder_builder`` turns that function into the public builder (``qwen3(...)``,
  ``qwen3_0_6b()``): same name, signature and docstring, but it returns the built
  ``TransformerDecoder``; the description stays reachable as ``qwen3.describe``.
- ``lora_builder(qwen3)`` is the LoRA twin of a component builder, ``lora_qwen3``:
  ``lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output``, then the base builder's
  arguments keyword-only, then ``lora_rank, lora_alpha, lora_dropout, use_dora,
  quantize_base`` (torchtune 0.6.1's signatures).
- ``lora_sized(qwen3_0_6b)`` is the LoRA twin of a size builder, ``lora_qwen3_0_6b``. The
  size builder is itself a ``decoder_builder`` (its body is
  ``return qwen3.describe(**sizes)``), so the twin pins the size by calling
  ``qwen3_0_6b.describe()``: each size is written once, in the base size builder, and the
  twin takes only the LoRA arguments, with 0.6.1's defaults (rank 8, alpha 16, dropout 0.05).
- ``qlora_builder`` (``_qlora.py``) fixes ``quantize_base=True`` on a LoRA size builder.

A LoRA option is then one edit here (``_LORA_SETTINGS`` and ``_lora_settings``), not one per
builder. The derived builders are plain functions with ``__signature__`` set, so
``inspect.signature``, config validation (``tune validate``), instantiation and
``scripts/models_doc.py`` see the whole argument list. Calls are bound against that
signature, so a missing or unknown argument raises ``TypeError`` naming it, as a written-out
function would.
"""

import functools
import inspect
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence

from torchtune.models._decoder import build_decoder, LoRASettings, lora_module_names
from torchtune.models._description import DecoderDescription
from torchtune.modules import TransformerDecoder

_Parameter = inspect.Parameter
_POSITIONAL = _Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = _Parameter.KEYWORD_ONLY

# Where the adapters go: the first arguments of every LoRA builder.
_LORA_TARGETS = (
    _Parameter("lora_attn_modules", _POSITIONAL, annotation=List[str]),
    _Parameter("apply_lora_to_mlp", _POSITIONAL, default=False, annotation=bool),
    _Parameter("apply_lora_to_output", _POSITIONAL, default=False, annotation=bool),
)
# How the adapters are made: the last arguments (keyword-only in a component builder's
# twin, where rank and alpha have no default; a size builder's twin gives them 0.6.1's).
_LORA_SETTINGS = (
    _Parameter("lora_rank", _KEYWORD, annotation=int),
    _Parameter("lora_alpha", _KEYWORD, annotation=float),
    _Parameter("lora_dropout", _KEYWORD, default=0.0, annotation=float),
    _Parameter("use_dora", _KEYWORD, default=False, annotation=bool),
    _Parameter("quantize_base", _KEYWORD, default=False, annotation=bool),
)
_SIZED_DEFAULTS = {"lora_rank": 8, "lora_alpha": 16}
# A mixture-of-experts family's twins also take this, after the other targets: the router
# is adapted by default (its [E, d] decides which experts learn from each token).
_ROUTER_TARGET = _Parameter("apply_lora_to_router", _POSITIONAL, default=True, annotation=bool)

# The meaning of each LoRA argument, once (read by scripts/models_doc.py for docs/models.md).
_LORA_ARG_DOCS = {
    "lora_attn_modules": "lora_attn_modules (List[str]): any of ``q_proj``, ``k_proj``, "
    "``v_proj``, ``output_proj``.",
    "apply_lora_to_mlp": "apply_lora_to_mlp (bool): also adapt w1, w2 and w3 (on a "
    "mixture-of-experts layer: every expert, with stacked adapters).",
    "apply_lora_to_router": "apply_lora_to_router (bool): adapt each mixture-of-experts "
    "layer's router.",
    "apply_lora_to_output": "apply_lora_to_output (bool): also adapt the final ``output`` "
    "projection.",
    "lora_rank": "lora_rank (int): adapter rank r (``lora_a`` is [r, in], ``lora_b`` [out, r]).",
    "lora_alpha": "lora_alpha (float): the update is scaled by ``alpha / r``.",
    "lora_dropout": "lora_dropout (float): dropout on the adapter input while training.",
    "use_dora": "use_dora (bool): DoRA adapters (a ``magnitude`` per adapted linear); call "
    "each ``LoRALinear.initialize_dora_magnitude()`` after loading the base weights.",
    "quantize_base": "quantize_base (bool): QLoRA: every frozen linear of the decoder layers "
    "(adapted or not) stores its weight as NF4, quantized as the checkpoint loads; the "
    "embedding, norms and a non-adapted output stay full precision.",
}
_LORA_RETURNS = (
    "TransformerDecoder: the LoRA model (all parameters trainable until "
    "``set_trainable_params`` is called)."
)


def decoder_builder(describe: Callable[..., DecoderDescription]) -> Callable[..., TransformerDecoder]:
    """Decorator: the builder of the model that ``describe`` describes.

    Args:
        describe (Callable[..., DecoderDescription]): the family's arguments in, the
            architecture out; its name, signature and docstring become the builder's.

    Returns:
        Callable[..., TransformerDecoder]: ``build_decoder(describe(...))``, with
        ``describe`` as its ``describe`` attribute (``lora_builder`` and ``lora_sized``
        derive the LoRA twins from it).
    """

    @functools.wraps(describe)
    def builder(*args: Any, **kwargs: Any) -> TransformerDecoder:
        return build_decoder(describe(*args, **kwargs))

    builder.__signature__ = inspect.signature(describe).replace(
        return_annotation=TransformerDecoder
    )
    builder.__annotations__ = {**describe.__annotations__, "return": TransformerDecoder}
    builder.describe = describe
    return builder


def lora_builder(
    base: Callable[..., TransformerDecoder],
    name: Optional[str] = None,
    notes: str = "",
    keyword_order: Optional[Sequence[str]] = None,
    router: bool = False,
) -> Callable[..., TransformerDecoder]:
    """The LoRA twin of a component builder made by ``decoder_builder``.

    Args:
        base (Callable[..., TransformerDecoder]): the base builder (``qwen3``).
        name (Optional[str]): the twin's name; None: ``"lora_" + base.__name__``.
        notes (str): what the family's docstring adds (how its own parameters behave
            under LoRA).
        keyword_order (Optional[Sequence[str]]): the base arguments in the twin's order,
            where torchtune 0.6.1's LoRA signature lists them otherwise than the base's
            (they are keyword-only there, so only the listing differs); None: the base's.
        router (bool): the twin takes ``apply_lora_to_router`` (default True), for a
            mixture-of-experts family.

    Returns:
        Callable[..., TransformerDecoder]: ``lora_<family>(lora_attn_modules,
        apply_lora_to_mlp=False, apply_lora_to_output=False, *, <base arguments>,
        lora_rank, lora_alpha, lora_dropout=0.0, use_dora=False, quantize_base=False)``.
    """
    name = name or f"lora_{base.__name__}"
    base_params = inspect.signature(base).parameters
    order = list(keyword_order or base_params)
    if sorted(order) != sorted(base_params):
        raise ValueError(f"keyword_order {order} is not a reordering of {list(base_params)}")
    targets = (*_LORA_TARGETS, _ROUTER_TARGET) if router else _LORA_TARGETS
    signature = inspect.Signature(
        [*targets, *(base_params[n].replace(kind=_KEYWORD) for n in order), *_LORA_SETTINGS],
        return_annotation=TransformerDecoder,
    )

    def lora(*args: Any, **kwargs: Any) -> TransformerDecoder:
        arguments = _bind(name, signature, args, kwargs)
        settings = _lora_settings(arguments)
        return build_decoder(base.describe(**{n: arguments[n] for n in base_params}), settings)

    base_ref = _public_path(base)
    summary = (
        f"Build ``{base.__name__}`` with LoRA adapters (Hu et al. 2021) on the chosen linear "
        "layers."
    )
    details = (
        f"Same sizes and state-dict names as ``{base_ref}``, plus ``lora_a``/``lora_b`` under "
        f"each adapted linear, so a base checkpoint loads with only adapter keys missing. {notes}"
    )
    args = (
        [_LORA_ARG_DOCS[p.name] for p in targets]
        + [f"{', '.join(order)}: as in ``{base_ref}``."]
        + [_LORA_ARG_DOCS[p.name] for p in _LORA_SETTINGS]
    )
    raises = (
        "ValueError: on an unknown module name in ``lora_attn_modules``, bad head counts, or "
        "``apply_lora_to_output`` with tied embeddings."
    )
    doc = _docstring([summary, details], args, raises)
    return _named(lora, name, base.__module__, signature, doc)


def lora_sized(
    base: Callable[[], TransformerDecoder],
    name: Optional[str] = None,
    takes_apply_lora_to_output: bool = True,
    lora_dropout: float = 0.05,
    router: bool = False,
) -> Callable[..., TransformerDecoder]:
    """The LoRA twin of a size builder made by ``decoder_builder`` (``qwen3_0_6b``).

    Args:
        base (Callable[[], TransformerDecoder]): the size builder; its ``describe()`` gives
            the size.
        name (Optional[str]): the twin's name; None: ``"lora_" + base.__name__``.
        takes_apply_lora_to_output (bool): whether the twin has an ``apply_lora_to_output``
            argument. torchtune 0.6.1's Qwen builders of tied sizes have none (the output
            is the embedding's weight); its Llama 3.2 builders have one, which raises when
            True.
        lora_dropout (float): the twin's ``lora_dropout`` default (0.6.1: 0.05, Mistral's 0.0).
        router (bool): the twin takes ``apply_lora_to_router`` (default True), for a
            mixture-of-experts family.

    Returns:
        Callable[..., TransformerDecoder]: ``lora_<size>(lora_attn_modules,
        apply_lora_to_mlp=False[, apply_lora_to_output=False], lora_rank=8, lora_alpha=16,
        lora_dropout=0.05, use_dora=False, quantize_base=False)``.
    """
    name = name or f"lora_{base.__name__}"
    targets = _LORA_TARGETS if takes_apply_lora_to_output else _LORA_TARGETS[:2]
    if router:
        targets = (*targets, _ROUTER_TARGET)
    defaults = {**_SIZED_DEFAULTS, "lora_dropout": lora_dropout}
    settings_params = [
        p.replace(kind=_POSITIONAL, default=defaults.get(p.name, p.default))
        for p in _LORA_SETTINGS
    ]
    signature = inspect.Signature(
        [*targets, *settings_params], return_annotation=TransformerDecoder
    )

    def lora(*args: Any, **kwargs: Any) -> TransformerDecoder:
        settings = _lora_settings(_bind(name, signature, args, kwargs))
        return build_decoder(base.describe(), settings)

    summary = f"``{base.__name__}`` with LoRA adapters on the chosen linear layers."
    if not takes_apply_lora_to_output:
        summary += " The output projection is tied to the embedding and takes no adapter."
    doc = _docstring([summary], [_LORA_ARG_DOCS[p] for p in signature.parameters])
    return _named(lora, name, base.__module__, signature, doc)


def _bind(
    name: str, signature: inspect.Signature, args: tuple, kwargs: Dict[str, Any]
) -> Dict[str, Any]:
    """Every argument by name, defaults filled in; a bad call fails as a Python call does."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}() {e}") from None
    bound.apply_defaults()
    return bound.arguments


def _lora_settings(arguments: Dict[str, Any]) -> LoRASettings:
    return LoRASettings(
        modules=lora_module_names(
            arguments["lora_attn_modules"],
            arguments["apply_lora_to_mlp"],
            arguments.get("apply_lora_to_output", False),
            arguments.get("apply_lora_to_router", False),
        ),
        rank=arguments["lora_rank"],
        alpha=arguments["lora_alpha"],
        dropout=arguments["lora_dropout"],
        use_dora=arguments["use_dora"],
        quantize_base=arguments["quantize_base"],
    )


def _named(
    fn: Callable, name: str, module: str, signature: inspect.Signature, doc: str
) -> Callable:
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    fn.__doc__ = doc
    fn.__signature__ = signature
    fn.__annotations__ = {
        **{p.name: p.annotation for p in signature.parameters.values()},
        "return": TransformerDecoder,
    }
    return fn


def _public_path(builder: Callable) -> str:
    """``torchtune.models.qwen3.qwen3`` for a builder defined in
    ``torchtune.models.qwen3._component_builders`` (its package re-exports it)."""
    package, _, module = builder.__module__.rpartition(".")
    return f"{package if module.startswith('_') else builder.__module__}.{builder.__name__}"


def _docstring(paragraphs: List[str], args: List[str], raises: Optional[str] = None) -> str:
    """A Google-style docstring, wrapped as the hand-written ones are."""

    def fill(text: str, indent: str = "") -> str:
        return textwrap.fill(
            text.strip(), width=88, initial_indent=indent, subsequent_indent=indent + "    " * bool(indent),
            break_long_words=False, break_on_hyphens=False,
        )

    sections = [fill(p) for p in paragraphs]
    sections.append("Args:\n" + "\n".join(fill(a, "    ") for a in args))
    sections.append("Returns:\n" + fill(_LORA_RETURNS, "    "))
    if raises:
        sections.append("Raises:\n" + fill(raises, "    "))
    return "\n\n".join(sections) + "\n"
