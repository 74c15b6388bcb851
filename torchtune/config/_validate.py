"""Check a merged config before anything is built.

Two checks, each collecting every problem rather than stopping at the first:

- against the recipe's parameter dataclass: unknown keys, missing required keys and
  values of the wrong type;
- every `_component_` path imports, and the node's keyword arguments bind to the
  callable's signature (without calling it, so no model is built and no weight read).
"""

import dataclasses
import difflib
import inspect
import os
import re
import types
import typing
from typing import Any, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchtune.config._errors import ConfigError, InstantiationError
from torchtune.config._instantiate import COMPONENT_KEY, describe_signature, resolve_component
from torchtune.config._resolve import env_names, record_of_key

# A config node that builds an object (`{_component_: dotted.path, ...}`). Recipe
# parameter dataclasses annotate such fields with `Component` (or Optional[Component]).
Component = typing.NewType("Component", dict)

_MISSING = object()


def _type_name(tp: Any) -> str:
    if tp is Component:
        return "a `_component_` node"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Whether a plain (resolved) config value fits a type annotation."""
    if tp is Any:
        return True
    if tp is Component:
        return isinstance(value, dict) and COMPONENT_KEY in value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


# ``${a.b}`` names key ``a``; ``${name:args}`` calls a resolver (``oc.env``) and names none.
_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_][\w-]*)((?:[.\[][\w.\[\]-]*)?)\s*(:?)")


def interpolated_keys(cfg: DictConfig) -> set[str]:
    """Top-level keys that some value interpolates (``${model_dir}/tokenizer.model`` uses
    ``model_dir``). Resolvers such as ``${oc.env:VAR}`` name no key."""
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            for name, _, resolver in _INTERPOLATION.findall(node):
                if not resolver:
                    used.add(name)

    walk(OmegaConf.to_container(cfg, resolve=False))
    return used


def _unresolvable(node: DictConfig, key: str, err: OmegaConfBaseException, where: str) -> str:
    """The problem line for ``node[key]`` (named ``where``) failing to resolve."""
    message = err.msg if hasattr(err, "msg") else str(err)
    message = message.strip().splitlines()[0] if message.strip() else type(err).__name__
    names = env_names(record_of_key(node, key))
    if names and all(n in os.environ for n in names):
        # The variables are set, so what failed used their values (``oc.decode`` of a
        # token), and OmegaConf's message may quote them.
        return (
            f"{where}: cannot resolve value derived from {', '.join(f'<env:{n}>' for n in names)}"
            f" ({type(err).__name__}; not shown, it may quote the environment value)"
        )
    return f"{where}: cannot resolve value: {message}"


def check_params(cfg: DictConfig, params_cls: type) -> list[str]:
    """Problems of ``cfg`` against a recipe's parameter dataclass (empty if none).

    A top-level key the recipe does not know is accepted when another value interpolates
    it (a common habit: ``model_dir: /x`` used as ``${model_dir}/tokenizer.model``); any
    other is reported with the nearest known name. Keys with a default may be left out.
    """
    problems = []
    hints = typing.get_type_hints(params_cls)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    used = interpolated_keys(cfg)
    for key in cfg.keys():
        if key not in fields and key not in used:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'? " if near else ""
            problems.append(
                f"{key}: unknown key for {params_cls.__name__} ({hint}"
                f"known keys: {', '.join(sorted(fields))})"
            )
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if name not in cfg or OmegaConf.is_missing(cfg, name):
            if required:
                problems.append(f"{name}: missing required key ({_type_name(hints[name])})")
            continue
        try:
            value = OmegaConf.to_container(cfg[name], resolve=True) if isinstance(
                cfg[name], (DictConfig, ListConfig)
            ) else cfg[name]
        except OmegaConfBaseException as e:
            problems.append(_unresolvable(cfg, name, e, name))
            continue
        if not _matches(value, hints[name]):
            # A value read from the environment is shown as <env:VAR>, never as itself.
            shown = record_of_key(cfg, name)
            problems.append(
                f"{name}: expected {_type_name(hints[name])}, got {shown!r} ({type(value).__name__})"
            )
    # Keys that are each fine but cannot work together: the dataclass may say which.
    combinations = getattr(params_cls, "combination_problems", None)
    if combinations is not None and not problems:
        problems += combinations(cfg)
    return problems


def fill_defaults(cfg: DictConfig, params_cls: type) -> DictConfig:
    """Add, in place, each key that ``cfg`` leaves out and ``params_cls`` gives a default.

    Configs written for other versions leave out keys a recipe gives defaults to
    (``validation_dataset``, ``sample_prompt`` ...); after this the recipe can read every
    key as ``cfg.key``. Run it after ``validate``.

    Returns:
        DictConfig: ``cfg`` itself.
    """
    for field in dataclasses.fields(params_cls):
        if field.name in cfg and not OmegaConf.is_missing(cfg, field.name):
            continue
        if field.default is not dataclasses.MISSING:
            cfg[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            cfg[field.name] = field.default_factory()
    return cfg


def _component_nodes(node: Any, key: str = ""):
    """Yield (dotted key, node) for every `_component_` node, depth first."""
    if isinstance(node, DictConfig):
        if COMPONENT_KEY in node:
            yield key or "<root>", node
        for k in node.keys():
            child = node._get_node(k)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _component_nodes(child, f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _component_nodes(child, f"{key}[{i}]")


def check_components(cfg: DictConfig) -> list[str]:
    """Problems with `_component_` nodes: unresolvable paths, keywords not in the signature."""
    problems = []
    for key, node in _component_nodes(cfg):
        where = f"{key}.{COMPONENT_KEY}"
        try:
            path = node[COMPONENT_KEY]
        except OmegaConfBaseException as e:  # ${oc.env:UNSET}
            problems.append(_unresolvable(node, COMPONENT_KEY, e, where))
            continue
        try:
            fn = resolve_component(path, key=where)
        except InstantiationError as e:
            problems.extend(e.problems)
            continue
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        names = [k for k in node.keys() if k != COMPONENT_KEY]
        # Recipes pass some arguments positionally (tokenizer, params), so only
        # keywords the callable cannot take are errors here.
        try:
            sig.bind_partial(**{k: None for k in names})
        except TypeError as e:
            problems.append(f"{key}: {e} for {describe_signature(fn)}")
    return problems


def check_required(cfg: DictConfig) -> list[str]:
    """One line per ``???`` value (a key the config leaves to the command line, such as the
    hf/* configs' ``model_dir``). Every value derived from one fails to resolve too, so
    the other checks are only worth running once these are set."""
    problems = []

    def walk(node: Any, prefix: str) -> None:
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            name = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
            if OmegaConf.is_missing(node, key):
                problems.append(f"{name}: required; set it on the command line ({name}=...)")
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation():
                walk(child, f"{name}.")

    walk(cfg, "")
    return problems


def validate(cfg: DictConfig, params_cls: Optional[type] = None) -> None:
    """Raise one ConfigError listing every problem in ``cfg`` (none: return quietly)."""
    problems = check_required(cfg)
    if problems:
        raise ConfigError(problems)
    problems = check_params(cfg, params_cls) if params_cls is not None else []
    problems += check_components(cfg)
    if problems:
        raise ConfigError(problems)
