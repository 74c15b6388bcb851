"""Writing into a run's output folder without following another user's links.

The shipped configs write under ``/tmp/torchtune/...``, a folder every local user can create
things in. If another user creates ``/tmp/torchtune`` first, or plants a symlink such as
``output_dir/.tune.lock -> ~victim/.bashrc``, a run that follows it overwrites a file of
the person running it. Two rules close that:

- The folders a run writes into must be private to it. ``check_output_folder`` walks the
  path, following links as the kernel would, and refuses a folder that every user may write
  to without the sticky bit (anyone can swap its entries), and, below a shared folder with
  the sticky bit (``/tmp``), any folder or link owned by another user (root excepted).
  Groups are trusted: a group-writable folder is the administrator's choice.
- A file is never written through a symlink. Files rewritten whole go through a temporary
  file renamed over the name (``write_text_atomically``), which replaces a link itself, never its
  target; files opened in place (the lock, appended logs) are opened with ``O_NOFOLLOW``
  (``open_append``), so a link there is an error.
"""

import os
import stat
from typing import IO, List, Optional

from torchtune._errors import UserOSError

_MAX_LINKS = 40  # as the kernel's limit: a deeper chain is a loop


def untrusted_part(path: str, uid: Optional[int] = None) -> Optional[str]:
    """Why writing under ``path`` could reach files another user controls, or None.

    Args:
        path (str): a folder a run writes into (it may not exist yet).
        uid (Optional[int]): whose run it is; default the effective uid.

    Returns:
        Optional[str]: a one-line reason naming the folder or link at fault.
    """
    uid = os.geteuid() if uid is None else uid
    trusted = {uid, 0}
    todo: List[str] = os.path.abspath(path).split(os.sep)[1:]
    current, shared, links = os.sep, None, 0
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None  # the rest does not exist yet: this run creates it
        if shared is not None and st.st_uid not in trusted:
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a folder"
            return (
                f"{candidate} is {kind} owned by another user (uid {st.st_uid}) in the shared "
                f"folder {shared}, who could redirect what this run writes"
            )
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return None  # a loop: creating the folder reports it
            target = os.readlink(candidate)
            if os.path.isabs(target):
                current, shared = os.sep, None
            todo[:0] = target.split(os.sep)
            continue
        if not stat.S_ISDIR(st.st_mode):
            return None  # not a folder: creating one under it fails with its own message
        if st.st_mode & stat.S_IWOTH:
            if not st.st_mode & stat.S_ISVTX:
                return (
                    f"{candidate} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}, "
                    "no sticky bit), so anyone could replace what this run writes there"
                )
            shared = candidate
        current = candidate
    return None


def check_output_folder(path: str, what: str = "output_dir") -> None:
    """Refuse to write under ``path`` when another user could redirect the writes.

    Raises:
        UserOSError: naming ``what``, the folder or link at fault and the way out.
    """
    reason = untrusted_part(path)
    if reason is not None:
        raise UserOSError(
            f"{what} {path}: {reason}; choose a folder of your own (e.g. under your home)"
        )


def open_append(path: str) -> IO[str]:
    """``open(path, "a")`` that refuses to follow a symlink at ``path``.

    Raises:
        UserOSError: ``path`` is a symlink, or cannot be opened.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        raise refusal(path, err) from None
    return os.fdopen(fd, "a", encoding="utf-8")


def open_lock_file(path: str) -> int:
    """A read-write descriptor of ``path`` (created if missing), never through a symlink."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        raise refusal(path, err) from None


def write_text_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; a symlink at ``path`` is replaced, not
    followed."""
    from torchtune.training.checkpointing import _io

    with _io.atomic_path(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)


def refusal(path: str, err: OSError) -> UserOSError:
    """The one-line error for a file of the output folder that cannot be opened."""
    if os.path.islink(path):
        return UserOSError(
            f"{path} is a symlink (to {os.readlink(path)}); refusing to write through it: "
            "remove it, or choose another output folder"
        )
    return UserOSError(f"cannot open {path} for writing: {err.strerror or err}")
