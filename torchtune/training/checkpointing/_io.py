"""Safe reading and atomic writing of checkpoint files.

Reading never runs pickled code (``weights_only=True``) and maps files instead of copying
them (``mmap=True`` for ``torch.save`` zip files, ``safe_open`` for safetensors), so loading
a checkpoint holds about one copy of the weights. Failures name the file.

Writing is atomic: each file is written under a hidden temporary name in its final
directory, flushed and fsynced, then ``os.replace``d onto its final name and the directory
fsynced. A process killed mid-save leaves the previous file intact and at most a stray
temporary file, which the next save in that directory removes. Whole folders (an HF epoch
folder, a step folder) are built under a temporary name and renamed into place the same way.
"""

import contextlib
import ctypes
import json
import os
import pickle
import re
import shutil
import sys
import uuid
from typing import Any, Dict, Iterator, List, Optional

import torch

_TMP_RE = re.compile(r"^\.(.+)\.(tmp|old|del)-torchtune-(\d+)-[0-9a-f]+$")


def list_dir(path: str) -> str:
    """Comma-separated listing of ``path`` for error messages."""
    try:
        names = sorted(n for n in os.listdir(path) if not _TMP_RE.match(n))
    except OSError:
        return f"(directory {path} does not exist)"
    return ", ".join(names) if names else "(empty)"


def require_file(path: str, what: str = "checkpoint file") -> str:
    """Return ``path`` if it is a file, else raise FileNotFoundError listing its directory."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        raise FileNotFoundError(
            f"{what} {path} not found; files in {folder}: {list_dir(folder)}"
        )
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def torch_load(path: str, what: str = "checkpoint file") -> Any:
    """``torch.load`` with ``weights_only=True`` and ``mmap=True``; errors name the file."""
    require_file(path, what)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            # Pre-1.6 (non-zip) files cannot be memory-mapped: read them normally.
            if "zipfile" not in str(err) and "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"Refusing to load {path}: it contains objects other than tensors and plain "
            f"containers, and weights_only loading never runs pickled code ({_first_line(err)})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(
            f"Could not read {what} {path}: the file is truncated or corrupt ({_first_line(err)})"
        ) from err


def safetensors_load(path: str) -> Dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file through a memory map; errors name the file."""
    from safetensors import safe_open

    require_file(path)
    try:
        out = {}
        with safe_open(path, framework="pt", device="cpu") as f:
            for key in f.keys():
                out[key] = f.get_tensor(key)
        return out
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError)
        raise ValueError(
            f"Could not read checkpoint file {path}: the file is truncated or corrupt "
            f"({_first_line(err)})"
        ) from err


def checkpoint_keys(path: str) -> List[str]:
    """Tensor names in a checkpoint file, without reading the tensors."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        require_file(path)
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                return list(f.keys())
        except Exception as err:
            raise ValueError(
                f"Could not read checkpoint file {path}: the file is truncated or corrupt "
                f"({_first_line(err)})"
            ) from err
    return list(torch_load(path))  # memory-mapped: the tensors are not read


def safetensors_metadata(path: str) -> Optional[Dict[str, str]]:
    """The ``__metadata__`` block of a safetensors file (e.g. ``{"format": "pt"}``)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return f.metadata()
    except Exception as err:
        raise ValueError(
            f"Could not read checkpoint file {path}: the file is truncated or corrupt "
            f"({_first_line(err)})"
        ) from err


def load_json(path: str, what: str = "file") -> Dict[str, Any]:
    require_file(path, what)
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"Could not parse {what} {path}: {_first_line(err)}") from err


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(final: str, kind: str = "tmp") -> str:
    folder, name = os.path.split(os.path.abspath(final))
    return os.path.join(folder, f".{name}.{kind}-torchtune-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_temporaries(folder: str) -> None:
    """Clean up after saves in ``folder`` whose process has died.

    Temporary files/folders are deleted. A folder moved aside by ``atomic_dir``'s fallback
    path (``.name.old-torchtune-*``) whose replacement never arrived is renamed back.
    """
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        m = _TMP_RE.match(entry)
        if m is None:
            continue
        name, kind, pid = m.group(1), m.group(2), int(m.group(3))
        if pid == os.getpid():
            continue  # our own save in flight (or its pending cleanup)
        try:
            os.kill(pid, 0)
            continue  # still running: another process may be saving right now
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        path = os.path.join(folder, entry)
        final = os.path.join(folder, name)
        if kind == "old" and not os.path.exists(final):
            os.replace(path, final)
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str) -> Iterator[str]:
    """Yield a temporary path beside ``final``; on success fsync it and rename it into place.

    Example:
        >>> with atomic_path("out/model.safetensors") as tmp:
        ...     safetensors.torch.save_file(tensors, tmp)
    """
    folder = os.path.dirname(os.path.abspath(final))
    os.makedirs(folder, exist_ok=True)
    tmp = _tmp_name(final)
    try:
        yield tmp
        # Some writers (safetensors) create files readable by the owner only; give every
        # checkpoint file the permissions an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def torch_save(obj: Any, final: str) -> None:
    """``torch.save`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()


def safetensors_save(
    tensors: Dict[str, torch.Tensor], final: str, metadata: Optional[Dict[str, str]] = None
) -> None:
    """Write a safetensors file atomically (``metadata`` defaults to ``{"format": "pt"}``,
    which transformers requires)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_path(final) as tmp:
        save_file(tensors, tmp, metadata=metadata or {"format": "pt"})


def json_save(obj: Any, final: str) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def copy_file(src: str, final: str) -> None:
    """Copy ``src`` to ``final`` atomically (no-op if they are the same file)."""
    if os.path.exists(final) and os.path.samefile(src, final):
        return
    with atomic_path(final) as tmp:
        shutil.copyfile(src, tmp)


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final``.

    An existing ``final`` is swapped with the new folder in one ``renameat2(RENAME_EXCHANGE)``
    call where the kernel and filesystem support it, so a folder under the final name is
    always complete. Elsewhere the old folder is first moved aside under a hidden name; if
    the process dies in between, the next save in ``parent`` moves it back.
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent)
    tmp = _tmp_name(final)
    os.makedirs(tmp)
    try:
        yield tmp
        fsync_dir(tmp)
        if not os.path.exists(final):
            os.replace(tmp, final)
        elif not _exchange(tmp, final):
            old = _tmp_name(final, kind="old")
            os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
        # After an exchange ``tmp`` holds the previous folder; ``finally`` deletes it.
        fsync_dir(parent)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def step_dirs(output_dir: str) -> List[int]:
    """Step numbers of the ``step_{N}`` folders in ``output_dir``, ascending."""
    if not os.path.isdir(output_dir):
        return []
    steps = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(r"step_(\d+)", name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            steps.append(int(m.group(1)))
    return sorted(steps)


def prune_step_dirs(output_dir: str, keep_last_n: Optional[int]) -> None:
    """Delete all but the ``keep_last_n`` highest-numbered step folders (None keeps all)."""
    if keep_last_n is None:
        return
    steps = step_dirs(output_dir)
    for step in steps[: max(len(steps) - keep_last_n, 0)]:
        doomed = os.path.join(output_dir, f"step_{step}")
        # Rename first so a crash mid-delete never leaves a half-deleted step_{N}.
        hidden = _tmp_name(doomed, kind="del")
        os.replace(doomed, hidden)
        shutil.rmtree(hidden, ignore_errors=True)

