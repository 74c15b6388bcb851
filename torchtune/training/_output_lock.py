"""One run per output folder.

Two runs writing into the same ``output_dir`` damage each other: each prunes the other's
step checkpoints, and their epoch files overwrite each other. A run therefore holds an
exclusive ``flock`` on ``output_dir/.tune.lock`` for its whole lifetime. The kernel drops
the lock when the process ends, however it ends (even ``kill -9``), so a crashed run never
leaves a stale lock behind. The file holds who took the lock, for the error message.

Taking the lock is also where a run first checks that ``output_dir`` is its own: no other
user can redirect its writes (``_output_files``), and the lock file is never opened
through a symlink.
"""

import datetime
import os
import socket
from typing import Optional

from torchtune._errors import UserOSError
from torchtune.training._output_files import check_output_folder, open_lock_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; runs are then not locked
    fcntl = None

LOCK_NAME = ".tune.lock"


class OutputDirLock:
    """Hold ``output_dir`` for this process until ``release()`` or the process ends.

    Args:
        output_dir (str): the run's output folder; created if missing.

    Raises:
        UserOSError: another live process holds the folder (the message names it), or the
            folder cannot be created.

    Example:
        >>> lock = OutputDirLock("/tmp/run")  # a second run on /tmp/run now fails at once
        >>> lock.release()
    """

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd: Optional[int] = None
        # Everything the run writes goes under output_dir: first make sure no other user
        # can redirect it there (a folder of theirs in /tmp, a planted link).
        check_output_folder(output_dir)
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as e:
            raise UserOSError(
                e.errno, f"output_dir: cannot create {self.path}: {e.strerror}"
            ) from None
        fd = open_lock_file(self.path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UserOSError(
                    f"output_dir {output_dir} is in use by another run ({holder}); wait for "
                    "it to finish or choose another output_dir"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, _describe_self().encode())
        self._fd = fd

    def release(self) -> None:
        """Let other runs use the folder (the lock file itself stays)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _describe_self() -> str:
    # Not the command line: an override may carry a secret (a logger's API key).
    started = datetime.datetime.now().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n"
