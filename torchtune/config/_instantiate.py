"""Build objects from `_component_` config nodes.

A node such as::

    optimizer:
      _component_: torch.optim.AdamW
      lr: 2e-5

is built by ``instantiate(cfg.optimizer, model.parameters())``: the dotted path is
imported, nested `_component_` nodes among its arguments are built first, and the
positional and keyword arguments the recipe passes are added to those from the config.
"""

import difflib
import importlib
import inspect
import pkgutil
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from torchtune.config._errors import InstantiationError

COMPONENT_KEY = "_component_"


def _node_key(node: Any, default: str = "<config>") -> str:
    """The dotted key of a node inside its root config, for error messages."""
    try:
        key = node._get_full_key(None)
    except Exception:
        key = ""
    return key or default


def _nearest_names(module: Any, name: str) -> list[str]:
    candidates = set(n for n in dir(module) if not n.startswith("__"))
    if hasattr(module, "__path__"):  # a package: its submodules need not be imported yet
        candidates.update(m.name for m in pkgutil.iter_modules(module.__path__))
    near = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.5)
    return [f"{module.__name__}.{n}" for n in near]


def resolve_component(path: str, key: str = "_component_") -> Callable[..., Any]:
    """Import the object at a dotted path such as ``torch.optim.AdamW``.

    Args:
        path (str): dotted path to a class or function.
        key (str): the config key holding the path, named in errors.

    Returns:
        Callable[..., Any]: the imported object.

    Raises:
        InstantiationError: naming the path and the nearest existing names.
    """
    if not isinstance(path, str) or not path or "." not in path:
        raise InstantiationError(
            f"{key}: '{path}' is not a dotted path like 'torchtune.models.llama2.llama2'"
        )
    parts = path.split(".")
    module, consumed = None, 0
    # Import the longest prefix that is a module, then walk attributes.
    for i in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
            consumed = i
            break
        except ModuleNotFoundError as e:
            if e.name is None or not ".".join(parts[:i]).startswith(e.name):
                raise InstantiationError(f"{key}: importing '{path}' failed: {e}") from e
            continue
    if module is None:
        raise InstantiationError(f"{key}: '{path}' not found: no module named '{parts[0]}'")
    obj = module
    for name in parts[consumed:]:
        if not hasattr(obj, name):
            near = _nearest_names(obj, name) if inspect.ismodule(obj) else []
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise InstantiationError(
                f"{key}: '{path}' not found: '{obj.__name__}' has no attribute '{name}'{hint}"
            )
        obj = getattr(obj, name)
    if not callable(obj):
        raise InstantiationError(f"{key}: '{path}' is not callable")
    return obj


def describe_signature(fn: Callable[..., Any]) -> str:
    """``name(arg, ...)`` for error messages."""
    try:
        return f"{getattr(fn, '__qualname__', fn)}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return str(fn)


def _build_value(value: Any) -> Any:
    if isinstance(value, DictConfig):
        if COMPONENT_KEY in value:
            return instantiate(value)
        return {k: _build_value(v) for k, v in value.items()}
    if isinstance(value, ListConfig):
        return [_build_value(v) for v in value]
    return value


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the object described by a `_component_` node.

    Args:
        config (DictConfig | dict | None): node with a `_component_` key and keyword
            arguments. Interpolations (``${output_dir}``) resolve against the root config.
        *args (Any): positional arguments supplied by the recipe (e.g. the tokenizer).
        **kwargs (Any): keyword arguments that override or add to the config's.

    Returns:
        Any: the built object, or None when ``config`` is None.

    Raises:
        InstantiationError: the path does not resolve, or the arguments do not bind to
            the callable's signature (the message names the config key and signature).

    Example:
        >>> cfg = OmegaConf.create({"_component_": "torch.nn.Linear", "in_features": 2})
        >>> instantiate(cfg, out_features=3)
        Linear(in_features=2, out_features=3, bias=True)
    """
    if config is None:
        return None
    if isinstance(config, dict):
        config = OmegaConf.create(config)
    key = _node_key(config)
    if not isinstance(config, DictConfig) or COMPONENT_KEY not in config:
        raise InstantiationError(f"{key}: cannot instantiate a node without a '{COMPONENT_KEY}' key")
    fn = resolve_component(config[COMPONENT_KEY], key=f"{key}.{COMPONENT_KEY}")
    config_kwargs = {k: _build_value(config[k]) for k in config if k != COMPONENT_KEY}
    config_kwargs.update(kwargs)
    try:
        inspect.signature(fn).bind(*args, **config_kwargs)
    except TypeError as e:
        raise InstantiationError(f"{key}: {e} for {describe_signature(fn)}") from None
    except ValueError:
        pass  # builtins without an introspectable signature: let the call decide
    return fn(*args, **config_kwargs)
