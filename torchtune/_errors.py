"""Errors of the user's making, and how the command line reports them.

A fault in what the user gave us (a config value, a path, a checkpoint or dataset file, a
record, a tokenizer file, a shape) is raised as a ``UserError``. The command line (`tune
run`, `tune validate`, `tune download`, and a recipe script run directly) prints it as one
line, ``error: <message>``, and exits with status 1: the message already names the culprit,
so a traceback would only bury it. Every other exception is a bug in torchtune or in the
code it calls, and keeps its traceback.

Set ``TUNE_TRACEBACK=1`` in the environment to see the traceback of a user error too.

The concrete classes also derive from the builtin a caller would expect
(``UserValueError`` is a ``ValueError``), so ``except ValueError`` keeps working.
"""

import os
import sys
from typing import NoReturn

TRACEBACK_ENV = "TUNE_TRACEBACK"


class UserError(Exception):
    """Marker base: the message is a complete, one-line explanation for the user."""


class UserValueError(UserError, ValueError):
    """A value, file content or record the user supplied is wrong."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class UserOSError(UserError, OSError):
    """The filesystem refused what the user's settings asked for (disk full, permission)."""


def show_tracebacks() -> bool:
    """Whether ``TUNE_TRACEBACK`` asks for tracebacks of user errors."""
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(err: BaseException) -> str:
    """The message of ``err`` folded onto one line."""
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


def exit_with(err: BaseException) -> NoReturn:
    """Print ``error: <message>`` for each line of a user error and exit with status 1."""
    problems = getattr(err, "problems", None) or [one_line(err)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr, flush=True)
    sys.exit(1)


INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended


def exit_interrupted(err: KeyboardInterrupt) -> NoReturn:
    """Print one ``interrupted`` line for Ctrl-C and exit with status 130.

    A recipe re-raises the interrupt with a note (where it stopped, the latest complete
    checkpoint); an empty note (a non-zero rank of a distributed run) prints nothing.
    """
    note = str(err.args[0]) if err.args else None
    # On a line of its own: Ctrl-C usually lands while a progress bar holds the line.
    if note is None:
        print("\ninterrupted", file=sys.stderr, flush=True)
    elif note:
        print(f"\ninterrupted: {note}", file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED_STATUS)


def one_line_usage_errors(parser) -> None:
    """Make an ``argparse`` parser report a wrong or missing argument as one ``error:``
    line with status 1, like every other user error (argparse's own way is the usage text
    and status 2)."""
    prog = parser.prog

    def error(message: str) -> NoReturn:
        print(f"error: {prog}: {message} (see {prog} --help)", file=sys.stderr, flush=True)
        sys.exit(1)

    parser.error = error
