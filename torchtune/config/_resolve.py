"""A run's config as written beside its logs: resolved, minus what the environment holds.

``${oc.env:VAR}`` (OmegaConf's resolver) reads an environment variable when the config is
resolved, the usual way to keep a secret such as an API token out of a yaml file. The
config a run records must not bring the secret back into a file, so every value resolved
from the environment is recorded as ``<env:VAR>``.

Masking goes by what a value was resolved from, not by how its text is spelled (OmegaConf
accepts ``${ oc.env:VAR }``, ``${oc.select:token}``, ``${oc.decode:${oc.env:VAR}}``...).
While the record is resolved, ``oc.env`` is swapped for a resolver that returns a marker
instead of reading the environment, so the secret is never even read; every other
resolver is wrapped so that one handed a marker returns a marker for its whole result.
Afterwards a marker inside a string (``x?t=${token}``) reads ``<env:VAR>``, and a value a
resolver derived from an environment value (``${oc.decode:${oc.env:VAR}}``) is recorded
whole as ``<env:VAR>``.

Not covered: a custom resolver that reads ``os.environ`` itself, and a custom resolver
that reads an environment-derived node through ``_root_``/``_parent_`` rather than as an
argument (its result is computed from the marker, so it holds no secret either).
"""

import re
import secrets
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.basecontainer import BaseContainer
from omegaconf.errors import OmegaConfBaseException

_ENV_RESOLVER = "oc.env"
# The resolver table is global to OmegaConf: two overlapping calls must not each save the
# other's swapped table as "the original".
_SWAP_LOCK = threading.RLock()  # re-entrant: a resolver may itself record a config


class _Markers:
    """Marker strings standing for environment values during one record resolution.

    A marker is ``\\0<nonce>-<index>\\0``; the index points to the variable names and to
    whether the marker stands for a whole value (a resolver's result) or can be shown in
    place. Digits survive case changes, and the nonce keeps config text from passing for
    a marker.
    """

    def __init__(self) -> None:
        self._nonce = "".join(secrets.choice("0123456789") for _ in range(16))
        self._pattern = re.compile(f"\0{self._nonce}-(\\d+)\0")
        self._table: list[tuple[tuple[str, ...], bool]] = []

    def new(self, names: tuple[str, ...], whole: bool) -> str:
        self._table.append((names, whole))
        return f"\0{self._nonce}-{len(self._table) - 1}\0"

    def found_in(self, value: Any) -> list[tuple[tuple[str, ...], bool]]:
        """The markers inside ``value`` (strings, lists, dicts and config nodes)."""
        found = (self._pattern.findall(text) for text in _strings(value))
        return [self._table[int(i)] for indices in found for i in indices]

    def names_in(self, value: Any) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for names, _ in self.found_in(value) for n in names))

    def unmark(self, value: Any) -> Any:
        """``value`` with each marker shown as ``<env:VAR>``; a string that holds a whole
        marker, or a marker something has altered, becomes ``<env:VAR>`` entirely."""
        if isinstance(value, dict):
            return {k: self.unmark(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.unmark(v) for v in value]
        if not isinstance(value, str) or self._nonce not in value:
            return value
        found = self.found_in(value)
        mangled = self._nonce in self._pattern.sub("", value)
        if mangled or any(whole for _, whole in found):
            names = self.names_in(value)
            return f"<env:{','.join(names)}>" if names else "<env>"
        return self._pattern.sub(lambda m: f"<env:{','.join(self._table[int(m[1])][0])}>", value)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (DictConfig, ListConfig)):
        try:  # a node handed to a resolver (``${oc.create:${headers}}``): look inside
            yield from _strings(OmegaConf.to_container(value, resolve=True))
        except OmegaConfBaseException:
            return
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _strings(v)


# OmegaConf (2.1 and later) stores each resolver wrapped as
# ``fn(root, parent, node, args, args_str)``; the replacements keep that form.
def _env_marker(markers: _Markers) -> Callable[..., str]:
    def resolve(root: Any, parent: Any, node: Any, args: tuple, args_str: tuple) -> str:
        del root, parent, node, args_str
        # ${oc.env:VAR,default}: the default is used only when VAR is unset, and is
        # recorded as <env:VAR> all the same. A name itself read from the environment
        # (${oc.env:${oc.env:A}}) is masked with that variable's name.
        name = args[0] if args else ""
        if markers.names_in(name):
            return markers.new(markers.names_in(name), whole=True)
        return markers.new((str(name),), whole=False)

    return resolve


def _tainting(markers: _Markers, original: Callable[..., Any]) -> Callable[..., Any]:
    def resolve(root: Any, parent: Any, node: Any, args: tuple, args_str: tuple) -> Any:
        names = markers.names_in(list(args))
        if names:  # derived from an environment value: cannot be shown in part
            return markers.new(names, whole=True)
        return original(root, parent, node, args, args_str)

    return resolve


@contextmanager
def _resolvers_that_mark(markers: _Markers) -> Iterator[None]:
    """Swap OmegaConf's resolvers for marking ones; the originals return on exit, even
    when resolution raises."""
    with _SWAP_LOCK:
        original = BaseContainer._resolvers
        swapped = {name: _tainting(markers, fn) for name, fn in original.items()}
        swapped[_ENV_RESOLVER] = _env_marker(markers)
        BaseContainer._resolvers = swapped
        try:
            yield
        finally:
            BaseContainer._resolvers = original


def _plain(node: Any, markers: _Markers, ancestors: tuple = ()) -> Any:
    """``node`` as dicts and lists, each value resolved where it sits (a value that fails
    to resolve is recorded as written, so recording never ends a run)."""
    ancestors += (id(node),)
    keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    out = {k: _value(node, k, markers, ancestors) for k in keys}
    return out if isinstance(node, DictConfig) else list(out.values())


def _value(parent: Any, key: Any, markers: _Markers, ancestors: tuple) -> Any:
    if OmegaConf.is_missing(parent, key):
        return "???"
    try:
        value = parent[key]
    except OmegaConfBaseException:
        return parent._get_node(key)._value()  # the text as written holds no secret
    if isinstance(value, (DictConfig, ListConfig)):
        if id(value) in ancestors:  # a node interpolating its own ancestor
            return parent._get_node(key)._value()
        return _plain(value, markers, ancestors)
    return markers.unmark(value)


def resolve_for_record(cfg: Any) -> Any:
    """``cfg`` as plain dicts and lists with interpolations resolved, except that values
    taken from the environment (``${oc.env:VAR}``, directly or through another key or
    resolver) are replaced by ``<env:VAR>``. The environment is not read.

    Args:
        cfg (Any): a DictConfig or ListConfig, or anything else (returned unchanged).

    Returns:
        Any: what metric loggers record as the run's config.

    Example:
        >>> cfg = OmegaConf.create({"token": "${oc.env:HF_TOKEN}", "url": "x?t=${token}"})
        >>> resolve_for_record(cfg)
        {'token': '<env:HF_TOKEN>', 'url': 'x?t=<env:HF_TOKEN>'}
    """
    if not isinstance(cfg, (DictConfig, ListConfig)):
        return cfg
    markers = _Markers()
    with _resolvers_that_mark(markers):
        return _plain(cfg, markers)


def record_of_key(cfg: DictConfig, key: Any) -> Any:
    """What :func:`resolve_for_record` records for ``cfg[key]``, resolving only that key:
    error messages show this instead of a resolved value that may hold a token."""
    markers = _Markers()
    with _resolvers_that_mark(markers):
        return _value(cfg, key, markers, (id(cfg),))


def env_names(recorded: Any) -> list[str]:
    """The variables a recorded value shows as ``<env:VAR>``."""
    found = re.findall(r"<env:([^>]*)>", repr(recorded))
    return list(dict.fromkeys(n for names in found for n in names.split(",") if n))
