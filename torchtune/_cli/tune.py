"""The `tune` command: `tune ls | cp | cat | run | validate | download`."""

import argparse
import sys
from typing import Optional, Sequence

from torchtune._cli import cp, ls, run, validate
from torchtune._errors import one_line_usage_errors


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tune",
        description="Fine-tune LLMs in native PyTorch. Run `tune SUBCOMMAND --help` for details.",
        epilog="example: tune run lora_finetune_single_device --config stories260K/lora_single_device",
    )
    sub = parser.add_subparsers(title="subcommands", dest="subcommand", metavar="SUBCOMMAND")
    from torchtune._cli import download  # huggingface_hub is imported lazily inside

    for module in (ls, cp, validate, run, download):
        module.add_subparser(sub)
    cat = sub.add_parser("cat", help="print a built-in config or a yaml file")
    cat.add_argument("config", help="built-in config name (e.g. llama2/7B_lora_single_device) or yaml path")
    cp.add_cat_arguments(cat)
    cat.set_defaults(func=cp.cat)
    for subparser in (parser, *sub.choices.values()):
        one_line_usage_errors(subparser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `tune run` hands everything after it, untouched, to the launcher or the recipe.
    if argv and argv[0] == "run":
        return run.run(argv[1:])
    parser = _build_parser()
    # Overrides may come before or after options (`validate CFG --recipe R k=v`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
