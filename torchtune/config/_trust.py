"""Which `_component_` paths of a config import code from outside torchtune's own world.

Any `_component_` can name any importable callable (``os.system``), so running a config
runs code. ``tune validate`` lists what a config would import from outside the trusted
packages: ``torchtune``, the shipped ``recipes``, ``torch``, ``torchao`` and the packages
torchtune itself requires. The standard library is not trusted: it holds ``os.system``,
``subprocess.run`` and ``builtins.eval``.
"""

import functools
import importlib.metadata
import inspect
import re
import sys
from typing import Any, Optional

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from torchtune.config._errors import InstantiationError
from torchtune.config._instantiate import COMPONENT_KEY, resolve_component
from torchtune.config._validate import _component_nodes

_ALWAYS_TRUSTED = frozenset({"torchtune", "recipes", "torch", "torchao"})


def _normalise(dist: str) -> str:
    # PEP 503: "huggingface-hub", "huggingface_hub" and "HuggingFace.Hub" are one project.
    return re.sub(r"[-_.]+", "-", dist).lower()


@functools.lru_cache(maxsize=1)
def trusted_packages() -> frozenset[str]:
    """Top-level import names treated as trusted: see the module docstring.

    The dependencies are read from the installed ``torchtune`` distribution (requirements
    without an ``extra`` marker); each is mapped to the names it installs
    (``huggingface-hub`` -> ``huggingface_hub``, ``PyYAML`` -> ``yaml``).
    """
    try:
        requirements = importlib.metadata.requires("torchtune") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    dists = set()
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if name:
            dists.add(_normalise(name[1]))
    names = {d.replace("-", "_") for d in dists}  # when the distribution is not installed
    for module, owners in importlib.metadata.packages_distributions().items():
        if "/" not in module and any(_normalise(o) in dists for o in owners):
            names.add(module)
    # Some wheels ship stray top-level folders (torchao's "test") named like a
    # standard-library package, which is what such an import finds; the standard library
    # is never trusted (sys.stdlib_module_names leaves out its "test" package).
    stdlib = set(sys.stdlib_module_names) | {"test"}
    return frozenset((names - stdlib) | _ALWAYS_TRUSTED)


def _origin(obj: Any) -> Optional[str]:
    """The module that defines ``obj`` (a partial: its function), or None if unknown."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.isroutine(obj) or inspect.isclass(obj):
        return getattr(obj, "__module__", None)
    return type(obj).__module__  # a callable instance: its class's code runs


def _modules_used(path: str) -> list[str]:
    """Modules a dotted path draws code from: the module it imports, any module it walks
    through as an attribute (``torch.os.system`` goes through ``os``), and the module
    defining the object it ends at. Only the path's first name if it does not import."""
    try:
        resolve_component(path)
    except InstantiationError:
        return [path.split(".")[0]]
    parts = path.split(".")
    # resolve_component imported the longest prefix that is a module.
    i = next(i for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in sys.modules)
    obj = sys.modules[".".join(parts[:i])]
    used = [obj.__name__]
    for name in parts[i:]:
        obj = getattr(obj, name)
        if inspect.ismodule(obj):
            used.append(obj.__name__)
    origin = _origin(obj)
    return used + ([origin] if origin else [])


def untrusted_components(cfg: DictConfig) -> list[tuple[str, str]]:
    """The `_component_` paths of ``cfg`` that import code from outside the trusted packages.

    Importing a path runs its module's top-level code, as building the config would.

    Args:
        cfg (DictConfig): a merged config.

    Returns:
        list[tuple[str, str]]: ``(key, dotted path)`` pairs, in config order; the key is
        the `_component_` entry's (``model._component_``).

    Example:
        >>> untrusted_components(OmegaConf.create({"model": {"_component_": "os.system"}}))
        [('model._component_', 'os.system')]
    """
    trusted = trusted_packages()
    found = []
    for key, node in _component_nodes(cfg):
        try:
            path = node[COMPONENT_KEY]
        except OmegaConfBaseException:  # unresolvable: listed as written
            path = str(node._get_node(COMPONENT_KEY)._value())
        if not isinstance(path, str) or not path:
            continue  # check_components reports it
        if any(m.split(".")[0] not in trusted for m in _modules_used(path)):
            where = COMPONENT_KEY if key == "<root>" else f"{key}.{COMPONENT_KEY}"
            found.append((where, path))
    return found
