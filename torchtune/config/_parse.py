"""Read a yaml config, apply ``key=value`` overrides, and hand it to a recipe.

Overrides follow the command line forms users know from torchtune/Hydra:

- ``a.b=c``          set a nested key (created if new); the value is parsed as yaml,
                     so ``lr=1e-4`` is a float, ``x=[1,2]`` a list, ``y=null`` None
- ``~a.b``           delete a key
- ``a._component_=pkg.fn``  swap the component a node builds
"""

import argparse
import functools
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchtune._errors import UserError, exit_interrupted, exit_with, one_line_usage_errors, show_tracebacks
from torchtune.config._errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; read it as the float users mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

# Built-in configs ship inside the `recipes` package.
_CONFIGS_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def builtin_configs_dir() -> Path:
    """Folder of the configs shipped with torchtune (``recipes/configs``)."""
    try:
        import recipes

        return Path(recipes.__file__).resolve().parent / "configs"
    except ImportError:
        return _CONFIGS_DIR


def resolve_config_path(name_or_path: str) -> Path:
    """Map a built-in config name (``llama2/7B_lora_single_device``) or a path to a file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    builtin = builtin_configs_dir() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if builtin.exists():
        return builtin
    if path.exists():
        return path
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a built-in config (see `tune ls`)"
    )


def load_config(name_or_path: str) -> DictConfig:
    """Load a yaml config, with a one-line error naming file and line on bad syntax."""
    path = resolve_config_path(name_or_path)
    text = path.read_text()
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: yaml syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a yaml mapping, got {type(data).__name__}")
    return OmegaConf.create(data)


def _parse_value(text: str) -> Any:
    try:
        value = yaml.load(text, Loader=_Loader) if text != "" else ""
    except yaml.YAMLError:
        return text  # e.g. an unquoted string with a colon: keep it as written
    # `prompt=ROMEO:` reads as the mapping {ROMEO: None}. Nobody writes a one-key mapping to
    # null that way (`x="{a: null}"` does it), so it is the text as typed.
    if (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value.values())) is None
        and text.rstrip().endswith(":")
        and "\n" not in text.strip()
    ):
        return text
    return value


def _copy_interpolated_parents(cfg: DictConfig, key: str) -> None:
    """Before setting ``a.b.c``, replace an interpolated ``a`` or ``a.b`` (``val: ${dataset}``)
    by a copy of what it points to, so the override changes ``val`` and not ``dataset``."""
    parts = key.split(".")
    for i in range(1, len(parts)):
        parent_key, leaf = ".".join(parts[: i - 1]), parts[i - 1]
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent:
            return
        if OmegaConf.is_interpolation(parent, leaf):
            target = parent[leaf]
            if isinstance(target, DictConfig):
                parent[leaf] = OmegaConf.create(OmegaConf.to_container(target, resolve=False))


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply command-line overrides (see module docstring) to ``cfg`` in place.

    Raises:
        ConfigError: an override is malformed or deletes a key that does not exist.
    """
    for item in overrides:
        if item.startswith("~"):
            key = item[1:]
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if not isinstance(parent, DictConfig) or leaf not in parent:
                raise ConfigError(f"override '{item}': key '{key}' is not in the config")
            del parent[leaf]
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"override '{item}' must look like key=value or ~key")
        _copy_interpolated_parents(cfg, key)
        try:
            OmegaConf.update(cfg, key, _parse_value(value), merge=False, force_add=True)
        except OmegaConfBaseException as e:
            raise ConfigError(f"override '{item}': {e.msg if hasattr(e, 'msg') else e}") from None
    return cfg


def load_and_override(config: str, overrides: Sequence[str]) -> DictConfig:
    """Config from a name/path with overrides applied; interpolations still lazy."""
    return apply_overrides(load_config(config), overrides)


def _recipe_parser(description: Optional[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        usage="%(prog)s --config CONFIG [key=value ...] [~key ...]",
    )
    parser.add_argument("--config", required=True, help="built-in config name or yaml path")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, ~key deletes")
    one_line_usage_errors(parser)
    return parser


def parse(recipe_main: Callable[[DictConfig], Any]) -> Callable[..., Any]:
    """Decorator for a recipe's ``recipe_main(cfg)``: parses ``--config`` and overrides.

    A fault of the user's making (a ``torchtune.UserError``, raised while reading the
    config or anywhere in the recipe) ends the process with ``error: <message>`` (one line
    per problem) and exit status 1, without a traceback; ``TUNE_TRACEBACK=1`` shows it.
    Ctrl-C ends it with one ``interrupted: ...`` line (where training stopped and the
    latest complete checkpoint, when the recipe says) and status 130.
    Any other exception is a bug and propagates with its traceback.
    """

    @functools.wraps(recipe_main)
    def wrapper(argv: Optional[Sequence[str]] = None) -> Any:
        parser = _recipe_parser(recipe_main.__doc__)
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        try:
            return recipe_main(load_and_override(args.config, args.overrides))
        except UserError as e:
            if show_tracebacks():
                raise
            exit_with(e)
        except KeyboardInterrupt as e:
            if show_tracebacks():
                raise
            exit_interrupted(e)

    return wrapper
