"""`tune run [LAUNCHER-ARGS] RECIPE --config CONFIG [key=value ...]`.

RECIPE is a built-in recipe name or a path to a recipe script. With launcher arguments
before RECIPE (``--nproc_per_node 2``, ``--nnodes 2 --rdzv-endpoint HOST:PORT`` ...) the
recipe is started through torchrun (``torch.distributed.run``); without, in this process.
"""

import argparse
import runpy
import signal
import sys
from pathlib import Path
from typing import Sequence

from torchtune._recipe_registry import get_all_recipes
from torchtune.config._parse import builtin_configs_dir

USAGE = "tune run [LAUNCHER-ARGS] RECIPE --config CONFIG [key=value ...] [~key ...]"


def add_subparser(subparsers) -> argparse.ArgumentParser:
    # Only for `tune --help`; `tune run ...` itself is parsed by `run()` below.
    parser = subparsers.add_parser(
        "run", help="run a recipe", usage=USAGE, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _builtin(name: str):
    return next((r for r in get_all_recipes() if r.name == name), None)


def _recipe_path(name: str) -> Path:
    recipe = _builtin(name)
    if recipe is not None:
        return builtin_configs_dir().parent / recipe.file_path
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path
    names = ", ".join(r.name for r in get_all_recipes())
    raise FileNotFoundError(f"recipe '{name}' is neither a built-in recipe ({names}) nor a .py file")


def _print_help() -> None:
    print(f"usage: {USAGE}\n\n{__doc__.strip()}\n")
    print("Built-in recipes: " + ", ".join(r.name for r in get_all_recipes()))
    print("Launcher arguments: see `torchrun --help`.")


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    from torch.distributed import run as torchrun

    launcher_args = torchrun.get_args_parser().parse_args(argv)
    try:
        recipe_path = _recipe_path(launcher_args.training_script)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    recipe_args = launcher_args.training_script_args
    if argv[0] == launcher_args.training_script:
        # No launcher arguments: run the recipe script here, as `python recipe.py ...`.
        sys.argv = [str(recipe_path), *recipe_args]
        try:
            runpy.run_path(str(recipe_path), run_name="__main__")
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                return e.code or 0
            print(e.code, file=sys.stderr)  # sys.exit("message"), as Python itself would
            return 1
        return 0
    recipe = _builtin(launcher_args.training_script)
    if recipe is not None and not recipe.supports_distributed:
        distributed = [r.name for r in get_all_recipes() if r.supports_distributed]
        print(
            f"error: {recipe.name} runs on one device; launcher arguments need a distributed "
            f"recipe ({', '.join(distributed)})",
            file=sys.stderr,
        )
        return 1
    launcher_args.training_script = str(recipe_path)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun.run(launcher_args)
    except (SignalException, KeyboardInterrupt) as e:
        # Ctrl-C reaches every rank too: rank 0 has printed where training stopped and the
        # latest checkpoint. The launcher adds nothing but its status (128 + the signal).
        sig = getattr(e, "sigval", signal.SIGINT)
        if sig != signal.SIGINT:
            print(f"error: the job was stopped by {signal.Signals(sig).name}", file=sys.stderr)
        return 128 + int(sig)
    except ChildFailedError as e:
        # torchrun's per-rank report, then one line that says what happened; no traceback.
        print(e.format_msg(), file=sys.stderr)
        rank, failure = e.get_first_failure()
        cause = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        print(f"error: the job stopped: rank {rank} failed with {cause} (report above)", file=sys.stderr)
        return 1
    return 0
