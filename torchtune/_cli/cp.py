"""`tune cp` and `tune cat`: copy a built-in recipe or config to edit, or print a config."""

import argparse
import shutil
import sys
from pathlib import Path

from torchtune._recipe_registry import get_all_recipes
from torchtune.config._parse import builtin_configs_dir


def add_subparser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cp",
        help="copy a built-in recipe or config to edit",
        description="Copy a built-in recipe (e.g. lora_finetune_single_device) or config "
        "(e.g. llama2/7B_lora_single_device) to DEST.",
    )
    parser.add_argument("name", help="built-in recipe or config name")
    parser.add_argument("destination", help="file or folder to copy to")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite DEST if it exists")
    parser.set_defaults(func=copy)
    return parser


def find_builtin(name: str) -> Path:
    """The file of a built-in recipe or config name; raises FileNotFoundError if none."""
    recipes_dir = builtin_configs_dir().parent
    for recipe in get_all_recipes():
        if name == recipe.name:
            return recipes_dir / recipe.file_path
        for config in recipe.configs:
            if name == config.name:
                return recipes_dir / "configs" / config.file_path
    raise FileNotFoundError(f"'{name}' is not a built-in recipe or config (see `tune ls`)")


def copy(args: argparse.Namespace) -> int:
    try:
        source = find_builtin(args.name)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    dest = Path(args.destination)
    if dest.is_dir():
        dest = dest / source.name
    elif dest.suffix == "":
        dest = dest.with_suffix(source.suffix)
    if dest.exists() and not args.force:
        print(f"error: {dest} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    if not dest.parent.is_dir():
        print(f"error: folder {dest.parent} does not exist", file=sys.stderr)
        return 1
    shutil.copyfile(source, dest)
    print(f"Copied {source.name} to {dest}")
    return 0


def cat(args: argparse.Namespace) -> int:
    try:
        source = find_builtin(args.config)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if source.suffix != ".yaml":
        print(f"error: '{args.config}' is a recipe, not a config", file=sys.stderr)
        return 1
    sys.stdout.write(source.read_text())
    return 0
