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
    parser.add_argument(
        "-n", "--no-clobber", action="store_true",
        help="do not overwrite DEST if it exists (exits 0 with a note)",
    )
    parser.add_argument(
        "--make-parents", action="store_true",
        help="create DEST's missing parent folders (without it a missing folder is an error)",
    )
    parser.set_defaults(func=copy)
    return parser


def add_cat_arguments(parser: argparse.ArgumentParser) -> None:
    """`tune cat`'s options beyond the config name (the parser is made in tune.py)."""
    parser.add_argument(
        "--sort", action="store_true",
        help="print the config with its keys sorted (still valid yaml)",
    )
    parser.description = "Print a built-in config, or a local yaml file."


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
    if args.force and args.no_clobber:
        print("error: pass --force or --no-clobber, not both", file=sys.stderr)
        return 1
    if dest.exists() and args.no_clobber:
        print(f"{dest} already exists; not overwriting it (--no-clobber)")
        return 0
    if dest.exists() and not args.force:
        print(f"error: {dest} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    if not dest.parent.is_dir():
        if not args.make_parents:
            print(
                f"error: folder {dest.parent} does not exist; pass --make-parents to create it",
                file=sys.stderr,
            )
            return 1
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"error: cannot create folder {dest.parent}: {e.strerror or e}", file=sys.stderr)
            return 1
    shutil.copyfile(source, dest)
    print(f"Copied {source.name} to {dest}")
    return 0


def cat(args: argparse.Namespace) -> int:
    try:
        source = find_builtin(args.config)
    except FileNotFoundError as e:
        local = Path(args.config)
        if local.suffix in (".yaml", ".yml") and local.is_file():
            source = local
        else:
            print(f"error: {e} or a yaml file", file=sys.stderr)
            return 1
    if source.suffix not in (".yaml", ".yml"):
        print(f"error: '{args.config}' is a recipe, not a config", file=sys.stderr)
        return 1
    try:
        text = source.read_text()
    except (OSError, UnicodeDecodeError) as e:
        print(f"error: cannot read {source}: {e}", file=sys.stderr)
        return 1
    if getattr(args, "sort", False):
        from omegaconf import OmegaConf

        try:
            cfg = OmegaConf.create(text)
        except Exception as e:  # yaml syntax errors come in several types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {source}: yaml syntax error: {first}", file=sys.stderr)
            return 1
        text = OmegaConf.to_yaml(cfg, sort_keys=True)
    sys.stdout.write(text)
    return 0
