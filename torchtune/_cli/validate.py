"""`tune validate CONFIG [key=value ...]`: check a config without building anything.

Every `_component_` must resolve and its keyword arguments must bind to its signature;
for a built-in config (or with ``--recipe``) the config is also checked against the
recipe's parameter dataclass. Every problem is listed, not just the first.

A config is code: any `_component_` can name any importable callable. After its result,
validate notes (on stderr, without changing the exit status) each component the config
would import from outside torchtune, torch, torchao and torchtune's own dependencies;
the standard library (``os.system``) is among those.
"""

import argparse
import importlib
import sys

from torchtune._recipe_registry import get_all_recipes
from torchtune.config import (
    ConfigError,
    check_components,
    check_params,
    check_required,
    load_and_override,
    untrusted_components,
)
from torchtune.config._parse import resolve_config_path


def add_subparser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate", help="check a config without running it", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="built-in config name or yaml path")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, ~key deletes")
    parser.add_argument("--recipe", help="also check against this recipe's parameters")
    parser.set_defaults(func=validate_cmd)
    return parser


def params_class(recipe_name: str) -> type:
    """Import a built-in recipe's parameter dataclass."""
    for recipe in get_all_recipes():
        if recipe.name == recipe_name:
            module, _, name = recipe.params.rpartition(".")
            return getattr(importlib.import_module(module), name)
    raise ConfigError(f"--recipe: '{recipe_name}' is not a built-in recipe (see `tune ls`)")


def _recipes_using(config_name: str) -> list:
    return [r.name for r in get_all_recipes() if any(c.name == config_name for c in r.configs)]


def _note_untrusted(cfg) -> None:
    found = untrusted_components(cfg)
    if found:
        listed = ", ".join(f"{path} (at {key})" for key, path in found)
        print(
            "note: this config imports code from outside torchtune and its dependencies: "
            f"{listed}. A config is code: run only configs you trust.",
            file=sys.stderr,
        )


def validate_cmd(args: argparse.Namespace) -> int:
    cfg = None
    try:
        cfg = load_and_override(args.config, args.overrides)
        recipes = [args.recipe] if args.recipe else _recipes_using(args.config.removesuffix(".yaml"))
        # Values derived from a missing one fail too: the rest is checked once it is set.
        problems = check_required(cfg)
        if not problems:
            for recipe in recipes:
                problems += check_params(cfg, params_class(recipe))
            problems += check_components(cfg)
    except ConfigError as e:
        problems = e.problems
    if problems:
        for p in dict.fromkeys(problems):
            print(f"error: {p}", file=sys.stderr)
    else:
        checked = f" against {', '.join(recipes)}" if recipes else ""
        print(f"Config is well-formed{checked}: {resolve_config_path(args.config)}")
    # After the result, and whatever it was: what the config would import is worth
    # knowing before it is fixed and run.
    if cfg is not None:
        _note_untrusted(cfg)
    return 1 if problems else 0
