"""Safe reading and atomic writing of checkpoint files.

Reading never runs pickled code (``weights_only=True``) and maps files instead of copying
them (``mmap=True`` for ``torch.save`` zip files, ``safe_open`` for safetensors), so loading
a checkpoint holds about one copy of the weights. Failures name the file.

Writing is atomic: each file is written under a hidden temporary name in its final
directory, flushed and fsynced, then ``os.replace``d onto its final name and the directory
fsynced. A process killed mid-save leaves the previous file intact and at most a stray
temporary file, which the next save in that directory removes. Whole folders (an HF epoch
folder, a step folder) are built under a temporary name and renamed into place the same way.

A write the filesystem refuses (disk full, permission denied, read-only) raises
``UserOSError`` naming the file; its temporary is removed and the previous file stays.
"""

import codecs
import contextlib
import ctypes
import errno
import filecmp
import json
import os
import pickle
import re
import shutil
import sys
import uuid
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from torchtune._errors import UserFileNotFoundError, UserOSError, UserValueError

_TMP_RE = re.compile(r"^\.(.+)\.(tmp|old|del)-torchtune-(\d+)-[0-9a-f]+$")
# safetensors reports I/O failures as "... (os error 28)" in a SafetensorError.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def list_dir(path: str) -> str:
    """Comma-separated listing of ``path`` for error messages."""
    try:
        names = sorted(n for n in os.listdir(path) if not _TMP_RE.match(n))
    except OSError:
        return f"(directory {path} does not exist)"
    return ", ".join(names) if names else "(empty)"


def require_file(path: str, what: str = "checkpoint file") -> str:
    """Return ``path`` if it is a file, else raise UserFileNotFoundError listing its directory."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        raise UserFileNotFoundError(
            f"{what} {path} not found; files in {folder}: {list_dir(folder)}"
        )
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def _unreadable(path: str, what: str, err: BaseException) -> Exception:
    """The error for a file that exists but cannot be read."""
    if isinstance(err, PermissionError):
        return UserOSError(f"Cannot read {what} {path}: permission denied")
    return UserValueError(
        f"Could not read {what} {path}: the file is truncated or corrupt ({_first_line(err)})"
    )


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
    except PermissionError as err:
        raise _unreadable(path, what, err) from err
    except MemoryError:
        raise
    except Exception as err:  # the unpickler meets data it was not made for in many ways
        what_it_is = not_torch_save(path)
        if what_it_is:
            raise UserValueError(f"{what} {path} is not a torch.save file ({what_it_is})") from err
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
            # PyTorch's own text advises weights_only=False, i.e. running the file's code:
            # keep only its reason.
            found = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?:\.\s|\n|$)", str(err))
            reason = found.group(1).strip() if found else ""
            if reason.startswith("Unsupported operand"):  # not a pickle opcode: damaged
                raise UserValueError(
                    f"Could not read {what} {path}: the file is truncated or corrupt ({reason})"
                ) from err
            raise UserValueError(
                f"Refusing to load {path}: it contains objects other than tensors and plain "
                "containers, and weights_only loading never runs pickled code"
                + (f" ({reason})" if reason else "")
            ) from err
        raise _unreadable(path, what, err) from err


# How every torch.save file begins: a zip archive (torch >= 1.6), or the pickle of its magic
# number (protocol >= 2 starts with the PROTO opcode; 0 and 1 spell the number in ASCII).
_TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80", b"L119547037146038801333356L")


def not_torch_save(path: str) -> Optional[str]:
    """What the file at ``path`` is (``"it looks like JSON text"``) if it cannot be a
    torch.save file, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(_TORCH_SAVE_STARTS):
        return None
    if not head:
        return "it is empty"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "it looks like a safetensors file"
    try:
        # Not final: a multi-byte character cut off by the 4 KiB read is still text.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        return "it holds binary data of another format"
    text = text.lstrip("\ufeff \t\r\n")
    return "it looks like JSON text" if text[:1] in ("{", "[") else "it looks like a text file"


def torch_load_per_group(path: str, kept: Dict[str, Any]) -> Any:
    """``torch_load`` for a streamed load, which opens a file once per group of tensors it
    reads: a zip-format file is memory-mapped again each time (its pages go with the group's
    tensors); one in torch.save's pre-1.6 format cannot be mapped, so it is read once and
    kept in ``kept`` (the caller's, for the length of the load) rather than once per group."""
    if path in kept:
        return kept[path]
    obj = torch_load(path)
    if not zipfile.is_zipfile(path):
        kept[path] = obj
    return obj


def safetensors_load(path: str, keys: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Read the tensors named ``keys`` (default: all) of a safetensors file through a memory
    map; errors name the file. The map lives as long as the returned tensors do."""
    from safetensors import safe_open

    require_file(path)
    try:
        out = {}
        with safe_open(path, framework="pt", device="cpu") as f:
            for key in f.keys() if keys is None else keys:
                out[key] = f.get_tensor(key)
        return out
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError)
        raise _unreadable(path, "checkpoint file", err) from err


def checkpoint_keys(path: str) -> List[str]:
    """Tensor names in a checkpoint file, without reading the tensors."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        require_file(path)
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                return list(f.keys())
        except Exception as err:
            raise _unreadable(path, "checkpoint file", err) from err
    return list(torch_load(path))  # memory-mapped: the tensors are not read


def safetensors_metadata(path: str) -> Optional[Dict[str, str]]:
    """The ``__metadata__`` block of a safetensors file (e.g. ``{"format": "pt"}``)."""
    from safetensors import safe_open

    require_file(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return f.metadata()
    except Exception as err:
        raise _unreadable(path, "checkpoint file", err) from err


def load_json(path: str, what: str = "file") -> Dict[str, Any]:
    """A JSON object from ``path``; anything else (bad JSON, a list) is a UserValueError."""
    require_file(path, what)
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserValueError(f"Could not parse {what} {path}: {_first_line(err)}") from err
    except RecursionError:  # json's parser recurses once per level of [ or {
        raise UserValueError(
            f"Could not parse {what} {path}: it nests arrays or objects too deeply to read"
        ) from None
    except OSError as err:
        raise _unreadable(path, what, err) from err
    if not isinstance(obj, dict):
        raise UserValueError(f"{what} {path} holds a JSON {type(obj).__name__}, not an object")
    return obj


def fsync_dir(path: str) -> None:
    """Make a rename or creation in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(final: str, kind: str = "tmp") -> str:
    folder, name = os.path.split(os.path.abspath(final))
    return os.path.join(folder, f".{name}.{kind}-torchtune-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def display_path(path: str) -> str:
    """``path`` with temporary folder names (``.epoch_1.tmp-torchtune-...``) shown as the final
    names they will get, so messages name the file the user will look for."""
    parts = os.path.abspath(path).split(os.sep)
    return os.sep.join(
        m.group(1) if (m := _TMP_RE.match(p)) and m.group(2) == "tmp" else p for p in parts
    )


@contextlib.contextmanager
def user_os_errors(target: str) -> Iterator[None]:
    """Turn an OSError raised while writing ``target`` into a one-line UserOSError.

    The filesystem refusing a write (disk full, quota, permissions, read-only) is about the
    user's machine and settings, not a bug; the message says which file and what to do.
    """
    try:
        yield
    except UserOSError:
        raise
    except OSError as err:
        raise _write_error(target, err) from err


def _write_error(target: str, err: OSError) -> UserOSError:
    shown = display_path(target)
    folder = os.path.dirname(shown)
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        msg = (
            f"No space left on device while writing {shown}: free space in {folder} or choose "
            "another output_dir (the previous checkpoint files are left as they were)"
        )
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = (
            f"Permission denied writing {shown} ({err.strerror or err}): make {folder} "
            "writable or choose another output_dir"
        )
    else:
        # Name a second file only if it is not our own temporary (e.g. a copy's missing source).
        culprit = err.filename if isinstance(err.filename, str) else None
        if culprit and (culprit == target or _TMP_RE.match(os.path.basename(culprit))):
            culprit = None
        detail = err.strerror or _first_line(err)
        msg = f"Could not write {shown}: {detail}" + (f" ({culprit})" if culprit else "")
    out = UserOSError(msg)
    out.errno = code  # so callers can still tell ENOSPC from EACCES
    return out


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
        elif os.path.isdir(path) and not os.path.islink(path):
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

    An OSError from the body or the rename (disk full, permissions) becomes a UserOSError
    naming ``final``; the temporary file is removed either way.

    Example:
        >>> with atomic_path("out/model.safetensors") as tmp:
        ...     safetensors.torch.save_file(tensors, tmp)
    """
    folder = os.path.dirname(os.path.abspath(final))
    tmp = _tmp_name(final)
    try:
        with user_os_errors(final):
            os.makedirs(folder, exist_ok=True)
            yield tmp
            # Some writers (safetensors) create files readable by the owner only; give
            # every checkpoint file the permissions an ordinary open() would.
            os.chmod(tmp, 0o666 & ~_current_umask())
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            fsync_dir(folder)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


class _ErrorKeepingWriter:
    """A binary file for ``torch.save`` that remembers the OSError of a failed write.

    ``torch.save`` turns a failed write into a RuntimeError ("unexpected pos ...") and drops
    the errno; keeping it lets a full disk be reported as one.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = 0
        try:
            while written < len(view):  # an unbuffered write may be short
                written += self._raw.write(view[written:])
        except OSError as err:
            self.error = err
            raise
        return written

    def flush(self) -> None:
        self._raw.flush()


def torch_save(obj: Any, final: str) -> None:
    """``torch.save`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb", buffering=0) as f:
            writer = _ErrorKeepingWriter(f)
            try:
                torch.save(obj, writer)
            except Exception as err:
                if writer.error is not None and writer.error is not err:
                    raise writer.error from err
                raise


def safetensors_save(
    tensors: Dict[str, torch.Tensor], final: str, metadata: Optional[Dict[str, str]] = None
) -> None:
    """Write a safetensors file atomically (``metadata`` defaults to ``{"format": "pt"}``,
    which transformers requires)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_path(final) as tmp:
        try:
            save_file(tensors, tmp, metadata=metadata or {"format": "pt"})
        except OSError:
            raise
        except Exception as err:  # SafetensorError: recover the errno it carries as text
            m = _RUST_OS_ERROR.search(str(err))
            if m is None:
                raise
            code = int(m.group(1))
            raise OSError(code, os.strerror(code)) from err


def json_save(obj: Any, final: str) -> None:
    """Write ``obj`` as indented JSON to ``final`` atomically."""
    with atomic_path(final) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def same_content(src: str, final: str) -> bool:
    """Whether ``final`` exists and is ``src`` or a byte-identical copy of it."""
    if not os.path.isfile(final):
        return False
    if os.path.samefile(src, final):
        return True
    return os.path.getsize(src) == os.path.getsize(final) and filecmp.cmp(src, final, shallow=False)


def copy_file(src: str, final: str) -> None:
    """Copy ``src`` to ``final`` atomically (no-op if ``final`` already holds its bytes)."""
    if same_content(src, final):
        return
    with atomic_path(final) as tmp:
        shutil.copyfile(src, tmp)


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final``.

    An existing ``final`` is swapped with the new folder in one ``renameat2(RENAME_EXCHANGE)``
    call where the kernel and filesystem support it, so a folder under the final name is
    always complete. Elsewhere the old folder is first moved aside under a hidden name; if
    the process dies in between, the next save in ``parent`` moves it back. OSErrors become
    a UserOSError naming ``final`` (or the file inside it that failed).
    """
    parent = os.path.dirname(os.path.abspath(final))
    tmp = _tmp_name(final)
    try:
        with user_os_errors(final):
            os.makedirs(parent, exist_ok=True)
            remove_stale_temporaries(parent)
            os.makedirs(tmp)
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
        if os.path.islink(tmp):  # an exchange with a symlinked ``final`` left the link here
            os.remove(tmp)
        elif os.path.isdir(tmp):
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


def remove_dir(path: str) -> None:
    """Delete the folder ``path``; renamed to a hidden name first, so a crash mid-delete never
    leaves a half-deleted folder under its real name."""
    hidden = _tmp_name(path, kind="del")
    with user_os_errors(path):
        os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)
