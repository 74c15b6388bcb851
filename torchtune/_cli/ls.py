"""`tune ls`: the built-in recipes and the configs each can use."""

import argparse

from torchtune._recipe_registry import get_all_recipes


def add_subparser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ls", help="list built-in recipes and their configs", description=__doc__
    )
    parser.set_defaults(func=list_recipes)
    return parser


def list_recipes(args: argparse.Namespace) -> int:
    rows = [("RECIPE", "CONFIG")]
    for recipe in get_all_recipes():
        names = [c.name for c in recipe.configs] or ["-"]
        rows.append((recipe.name, names[0]))
        rows.extend(("", name) for name in names[1:])
    width = max(len(r[0]) for r in rows) + 3
    for recipe, config in rows:
        print(f"{recipe:<{width}}{config}")
    return 0
