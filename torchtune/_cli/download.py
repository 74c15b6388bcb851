"""`tune download`: fetch a model repo from the Hugging Face Hub into a local folder.

What the command guarantees:

- Nothing is replaced unasked. Before a single file is fetched, the repo's file list (after
  ``--ignore-patterns``) is checked against ``--output-dir``: if the folder already holds files
  of the same names, a previous download of the repo included, the command refuses and names
  them, unless ``--force`` is given. ``--force`` replaces files, never a folder. Files the
  repo doesn't have are kept: downloading into a folder of other files merges into it.
- All or nothing. The files arrive in a hidden staging folder, ``.NAME.XXXXXXXX.incomplete``
  next to ``--output-dir`` (or inside it, when it exists already, so that the final moves are
  renames on its filesystem), and are moved into place only once every file has arrived. A
  refused, failed or interrupted download removes the staging folder and any folder it
  created, and leaves ``--output-dir`` as it was (the one exception, a merge failing midway,
  is described in ``download``).
- Ctrl-C stops the download at once, even in the middle of a transfer, with status 130;
  SIGTERM (``kill``) does the same with status 143. A staging folder that a download killed
  outright (SIGKILL, a crash) left behind is removed by the next download into that folder;
  a live download holds a lock on its own, so a download running alongside is left alone.
- Folders it creates get the permissions the user's umask gives (``0o777 & ~umask``).
- A fault of the user's making (a bad or missing repo id, a gated or private repo, a token,
  the network, a full disk or a refused folder, a clash, conflicting arguments) ends the
  command with one line ``error: <message>`` on stderr and status 1, without a traceback.
  ``DownloadError`` is a ``torchtune._errors.UserError``.
- Weights are downloaded once. Repos often hold them twice; by default the copy the
  configs don't read is skipped. Llama 2 layout (top level holds ``pytorch_model*.bin`` or
  ``consolidated*.pth``, which its configs name): ``*.safetensors`` is skipped. Llama 3
  layout (top-level ``*.safetensors``, Meta's copy under ``original/``, e.g.
  ``meta-llama/Llama-3.1-8B-Instruct``): ``original/*consolidated*.pth`` is skipped, while
  ``original/tokenizer.model`` and ``original/params.json`` are kept. Any other repo is
  downloaded whole. ``--ignore-patterns`` replaces the default; ``''`` downloads everything.
- The finished folder holds ``.tune_download.json`` (``{"repo_id": ..., "revision": <commit
  sha>}``), written last; the checkpointers read it to fill ``base_model_name_or_path`` when
  they write PEFT adapter configs.

The access token comes from ``--hf-token``, else ``HF_TOKEN``, else huggingface_hub's stored
login. It is only ever handed to huggingface_hub, and it is scrubbed from every message we
print.
"""

import argparse
import contextlib
import fnmatch
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator, List, Optional, Sequence, Tuple

from torchtune._errors import one_line, one_line_usage_errors, UserError

try:
    import fcntl
except ImportError:  # Windows: abandoned staging folders are not cleaned up
    fcntl = None

RECORD_FILE = ".tune_download.json"

# Hub repos often carry the same weights twice, and by default only the copy the configs
# name is downloaded. The rule, from the repo's file list (top level = not in a subfolder):
#
# 1. Llama 2 layout: the top level holds pytorch_model*.bin or *consolidated*.pth (HF's
#    meta-llama/Llama-2-7b-hf, Meta's meta-llama/Llama-2-7b). The configs name those files,
#    so the '*.safetensors' copy is skipped (anywhere in the repo).
# 2. Llama 3 layout: otherwise, when the top level holds *.safetensors, the Meta copy in a
#    subfolder ('original/consolidated.00.pth', 'original/mp16/consolidated.07.pth' ...)
#    is skipped: pattern 'original/*consolidated*.pth'. The rest of original/ (params.json,
#    tokenizer.model, which the Meta-format configs and tokenizers read) is kept.
# 3. Otherwise nothing is skipped: a repo with a single copy is downloaded whole.
_DUPLICATE_WEIGHTS = "*.safetensors"
_OTHER_WEIGHTS = ("pytorch_model*.bin", "*consolidated*.pth")
_META_COPY = "original/*consolidated*.pth"

_HELP_IGNORE = (
    "glob of repo files not to download; repeat the flag for several. Default: skip the "
    "second copy of the weights. In a Llama 2 layout repo (top level holds pytorch_model*.bin "
    "or consolidated*.pth, which its configs name) that is '*.safetensors'; in a Llama 3 "
    "layout repo (top-level *.safetensors with Meta's copy in original/) it is "
    f"'{_META_COPY}', keeping original/tokenizer.model and original/params.json; otherwise "
    "nothing. Pass --ignore-patterns '' to download every file."
)
_HELP_FORCE = (
    "replace files in --output-dir that have the names of the repo's files (a previous "
    "download of it, or edited copies). Without it the command refuses and lists them. "
    "Folders are never replaced."
)

# The main thread waits for the transfer in steps this long: a signal cuts a wait short on
# Linux, and where it doesn't, a Ctrl-C is still seen within one step.
_POLL_SECONDS = 0.1
_SHOWN_NAMES = 8  # a clash message lists this many files, then says how many more


class DownloadError(UserError):
    """A download that cannot go on; the message is one line for the user."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the download cleans up as after a Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def add_subparser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "download",
        help="download a model from the Hugging Face Hub",
        description="Download a model repo from the Hugging Face Hub into --output-dir. Files "
        "arrive in a hidden temporary folder and are moved in only when all are there; the "
        f"folder then holds {RECORD_FILE} with the repo id and commit sha. Files already in "
        "--output-dir are never replaced without --force; other files there are kept.",
        epilog="example: tune download meta-llama/Llama-2-7b --output-dir /tmp/llama2 "
        "(with HF_TOKEN set in the environment)",
    )
    parser.add_argument("repo_id", nargs="?", help="Hub repo id, e.g. meta-llama/Llama-2-7b")
    parser.add_argument(
        "--repo-id", dest="repo_id_flag", metavar="REPO_ID", help="the repo id, as older docs write it"
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="folder to put the files in")
    parser.add_argument(
        "--hf-token",
        default=None,
        metavar="TOKEN",
        help="Hub access token, needed for gated and private repos. Default: the HF_TOKEN "
        "environment variable (preferred: a flag is visible to other users in the process list)",
    )
    parser.add_argument(
        "--ignore-patterns", action="append", default=None, metavar="PATTERN", help=_HELP_IGNORE
    )
    parser.add_argument("--force", action="store_true", help=_HELP_FORCE)
    parser.set_defaults(func=run)
    one_line_usage_errors(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    token = args.hf_token or os.environ.get("HF_TOKEN") or None
    repo_id = args.repo_id or args.repo_id_flag
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        _check_repo_id_arguments(args)
        download(repo_id, args.output_dir, token=token, ignore_patterns=args.ignore_patterns, force=args.force)
    except DownloadError as e:
        print(f"error: {_redact(one_line(e), token)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        how, status = ("terminated", 143) if isinstance(e, _Terminated) else ("interrupted", 130)
        print(f"error: download of '{repo_id}' {how}; {args.output_dir} is unchanged", file=sys.stderr)
        _exit_now_if_transfers_linger(status)
        return status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _check_repo_id_arguments(args: argparse.Namespace) -> None:
    if args.repo_id and args.repo_id_flag and args.repo_id != args.repo_id_flag:
        raise DownloadError(f"two repo ids given ({args.repo_id} and --repo-id {args.repo_id_flag}); give one")
    if not (args.repo_id or args.repo_id_flag):
        raise DownloadError("give the repo id, e.g. tune download meta-llama/Llama-2-7b")


def _exit_now_if_transfers_linger(status: int) -> None:
    """After a Ctrl-C, end the process without waiting for huggingface_hub's worker threads.

    They may be stuck in a transfer we abandoned, and Python joins a thread pool's workers at
    exit, so a normal exit would wait for the transfer to finish: minutes on a big file. The
    staging folder is gone and the message printed; there is nothing left to wait for.
    """
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def download(
    repo_id: str,
    output_dir: Path,
    *,
    token: Optional[str] = None,
    ignore_patterns: Optional[Sequence[str]] = None,
    force: bool = False,
) -> List[str]:
    """Download the files of Hub model repo ``repo_id`` at its main branch into ``output_dir``.

    Args:
        repo_id (str): Hub repo id, e.g. ``meta-llama/Llama-2-7b``.
        output_dir (Path): folder to put the files in. It is created if missing; files already
            there that the repo doesn't have are kept.
        token (Optional[str]): Hub access token; None lets huggingface_hub look for one.
        ignore_patterns (Optional[Sequence[str]]): globs of repo files to skip; None applies the
            default described in ``tune download --help``; empty strings are dropped.
        force (bool): replace files in ``output_dir`` that have the names of repo files.
            Without it such files make the download refuse before fetching anything.

    Returns:
        List[str]: the downloaded files, relative to ``output_dir``.

    Raises:
        DownloadError: the repo can't be reached or read, the files can't be written, or
            ``output_dir`` holds files of the same names and ``force`` is False. ``output_dir``
            is unchanged, unless a merge into an existing folder failed midway, which the
            checks made before fetching leave to races, disk faults and bind mounts inside
            ``output_dir``: then it is left without a ``.tune_download.json``.
        KeyboardInterrupt: Ctrl-C; the staging folder is removed first. The transfer threads
            may still run: ``tune download`` exits without waiting for them.
    """
    output_dir = output_dir.expanduser().absolute()
    _check_output_dir(output_dir)
    commit, repo_files = _list_repo(repo_id, token)
    patterns = _ignore_patterns(ignore_patterns, repo_files)
    wanted = _without_ignored(repo_files, patterns)
    _refuse_unsafe_names(repo_id, wanted, output_dir)
    if ignore_patterns is None and len(wanted) < len(repo_files):
        print(
            f"Skipping {len(repo_files) - len(wanted)} files matching {patterns[0]!r}: a second "
            "copy of the weights; pass --ignore-patterns '' to download them too."
        )
    _refuse_clashes(output_dir, wanted, repo_id, force)
    _refuse_unmovable(output_dir, wanted)

    with _explain_os_errors(f"cannot create a folder for --output-dir {output_dir}"):
        created = _make_folder_and_parents(output_dir.parent)
        # Inside an existing output folder, so the moves into it are renames on its filesystem
        # (it may be a mount point); else a sibling, renamed into place at the end.
        staging_parent = output_dir if output_dir.is_dir() else output_dir.parent
        _remove_abandoned_staging_folders(output_dir)
        staging, staging_lock = _make_staging_folder(staging_parent, output_dir.name)
    try:
        with _explain_hub_errors(repo_id, token, output_dir):
            # Pinning the commit makes every file come from the same snapshot we recorded.
            _snapshot_download_interruptibly(
                repo_id, revision=commit, local_dir=staging, token=token, ignore_patterns=patterns or None
            )
        with _explain_os_errors(f"cannot move the downloaded files into {output_dir}"), _interrupts_ignored():
            files = _finish_staging(staging, repo_id, commit)
            _move_into_place(staging, output_dir, files)
    except BaseException:
        with _interrupts_ignored():  # a second Ctrl-C must not cut the cleanup short
            _remove_staging_folder(staging)
            _remove_empty_folders(created)
        raise
    finally:
        os.close(staging_lock)

    print(f"Downloaded {repo_id} at commit {commit} ({len(files)} files) to {output_dir}:")
    for name in files:
        print(f"  {output_dir / name}")
    return files


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise DownloadError(f"--output-dir {output_dir} exists and is not a folder")
    if output_dir.is_dir() and not os.access(output_dir, os.W_OK | os.X_OK):
        raise DownloadError(f"--output-dir {output_dir} is not writable (read-only, or no permission)")


def _list_repo(repo_id: str, token: Optional[str]) -> Tuple[str, List[str]]:
    """The repo's current commit sha and its files."""
    from huggingface_hub import constants, HfApi

    api = HfApi(token=token)
    with _explain_hub_errors(repo_id, token, None):
        info = api.model_info(repo_id)
        if not info.sha:
            raise DownloadError(f"{constants.ENDPOINT} did not report the commit of '{repo_id}'")
        if info.siblings is not None:
            return info.sha, [s.rfilename for s in info.siblings]
        return info.sha, api.list_repo_files(repo_id, revision=info.sha)


def _ignore_patterns(requested: Optional[Sequence[str]], repo_files: Sequence[str]) -> List[str]:
    """The patterns asked for, or the default: the rule above ``_DUPLICATE_WEIGHTS``."""
    if requested is not None:
        return [p for p in requested if p]
    top_level = [f for f in repo_files if "/" not in f]
    if any(fnmatch.fnmatch(f, p) for f in top_level for p in _OTHER_WEIGHTS):
        return [_DUPLICATE_WEIGHTS]  # Llama 2 layout
    if any(fnmatch.fnmatch(f, _DUPLICATE_WEIGHTS) for f in top_level):
        return [_META_COPY]  # Llama 3 layout (a no-op when there is no original/ copy)
    return []


def _without_ignored(repo_files: Sequence[str], patterns: Sequence[str]) -> List[str]:
    # The filter snapshot_download applies, so that we check exactly the files it will fetch.
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(repo_files, ignore_patterns=list(patterns) or None))


def _refuse_unsafe_names(repo_id: str, wanted: Sequence[str], output_dir: Path) -> None:
    """Refuse, before anything is made or fetched, a listing whose names would put a file
    outside ``output_dir`` (``../x``, ``a/../../b``, ``/etc/x``, ``C:\\x``). The Hub doesn't
    allow such names, but a mirror or a compromised endpoint could list them; huggingface_hub
    refuses them too, with a traceback."""
    for name in wanted:
        parts = name.replace("\\", "/").split("/")
        if ".." in parts:
            why = "holds a '..' segment"
        elif name.startswith(("/", "\\")) or any(PureWindowsPath(p).drive for p in parts):
            why = "is an absolute path"
        else:
            continue
        raise DownloadError(
            f"the Hub lists a file of '{repo_id}' named {name!r}, which {why} and could land "
            f"outside --output-dir {output_dir}; nothing was downloaded"
        )


def _refuse_clashes(output_dir: Path, wanted: Sequence[str], repo_id: str, force: bool) -> None:
    """Refuse, before anything is fetched, to overwrite files in ``output_dir`` unless ``force``.

    A folder where the repo has a file (or a file where it has a folder) is refused even with
    ``force``: replacing it would delete a whole tree, and the move would fail halfway.
    """
    if not output_dir.is_dir():
        return
    blocked = [f for f in wanted if _kind_differs(output_dir, f)]
    if blocked:
        raise DownloadError(
            f"--output-dir {output_dir} has folders or files in the way of files of '{repo_id}' "
            f"({_some_names(blocked)}): a folder where the repo has a file, or a file where it "
            "has a folder; move them away (--force replaces files only)"
        )
    existing = [f for f in wanted if os.path.lexists(output_dir / f)]
    if existing and not force:
        raise DownloadError(
            f"--output-dir {output_dir} already holds {len(existing)} files that '{repo_id}' "
            f"also has ({_some_names(existing)}); nothing was downloaded: pass --force to replace them"
        )


def _refuse_unmovable(output_dir: Path, wanted: Sequence[str]) -> None:
    """Refuse, before anything is fetched, a merge that would stop midway: the files are
    renamed from a staging folder inside ``output_dir``, and a rename can't enter a read-only
    folder, nor one on another filesystem (a mount point, or a symlink to another disk, inside
    ``output_dir``; a bind mount of the same filesystem goes unseen)."""
    if not output_dir.is_dir():
        return  # the staging folder is renamed into place as a whole
    device = output_dir.stat().st_dev
    for folder in sorted({(output_dir / name).parent for name in wanted}):
        while not folder.exists():  # to be created by the merge, inside its nearest existing parent
            folder = folder.parent
        if folder.stat().st_dev != device or not os.access(folder, os.W_OK | os.X_OK):
            raise DownloadError(
                f"cannot put the files into {folder}: it is read-only or on another filesystem "
                f"than --output-dir {output_dir}; nothing was downloaded"
            )


def _kind_differs(output_dir: Path, repo_file: str) -> bool:
    target = output_dir / repo_file
    if target.is_dir() and not target.is_symlink():
        return True
    folders = PurePosixPath(repo_file).parents
    return any((output_dir / f).exists() and not (output_dir / f).is_dir() for f in folders if str(f) != ".")


def _some_names(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def _remove_staging_folder(staging: Path) -> None:
    # After a Ctrl-C huggingface_hub's workers may still be running and add a file while the
    # tree is being removed (its folder then isn't empty when its turn comes): sweep again.
    for _ in range(3):
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.lexists(staging):
            return


def _make_folder_and_parents(folder: Path) -> List[Path]:
    """``mkdir -p folder``; returns the folders it created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty_folders(folders: Sequence[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _make_staging_folder(parent: Path, name: str) -> Tuple[Path, int]:
    """A new hidden folder in ``parent``, with the mode the umask gives, and a descriptor
    holding a lock on it for as long as the download runs (the caller closes it).

    Not ``tempfile.mkdtemp``: it makes the folder 0o700, and renamed into place that would
    become the mode of the output folder, whatever the user's umask.
    """
    while True:
        staging = parent / f".{name}.{secrets.token_hex(4)}.incomplete"
        # Made under another name and renamed once locked: another download must never see
        # it unlocked and take it for an abandoned one.
        unlocked = staging.with_name(staging.name + ".new")
        try:
            unlocked.mkdir()
        except FileExistsError:  # a name taken already (two downloads at once): draw another
            continue
        fd = os.open(unlocked, os.O_RDONLY)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new folder: nobody else holds it
        if staging.exists():  # drawn by another download meanwhile (rename would replace it)
            os.close(fd)
            unlocked.rmdir()
            continue
        unlocked.rename(staging)
        return staging, fd


def _remove_abandoned_staging_folders(output_dir: Path) -> None:
    """Remove the staging folders that downloads into ``output_dir`` killed outright left
    (beside it, or inside it when it existed): those no live download holds a lock on.
    The lock goes with the process however it ends, so a download running alongside keeps
    its own. (Without ``fcntl``, as on Windows, nothing is removed.)"""
    if fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(output_dir.name)}\.[0-9a-f]{{8}}\.incomplete")
    for parent in (output_dir.parent, output_dir):
        names: List[str] = []
        with contextlib.suppress(OSError):  # not there (yet): nothing to remove
            names = [n for n in os.listdir(parent) if pattern.fullmatch(n)]
        for name in names:
            path = parent / name
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                continue  # not a folder (or a symlink): not ours
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # held: a download in progress
                continue
            try:
                _remove_staging_folder(path)
            finally:
                os.close(fd)


def _snapshot_download_interruptibly(repo_id: str, **kwargs) -> None:
    """``snapshot_download`` on a daemon thread, waited for in short steps.

    snapshot_download fetches the files on a thread pool and waits for it; a Ctrl-C landing in
    that wait lets every transfer in flight finish first (minutes on a big file). Waiting here
    with a timeout keeps the main thread ready to raise the KeyboardInterrupt at once.
    """
    from huggingface_hub import snapshot_download

    failures: List[BaseException] = []

    def fetch() -> None:
        try:
            snapshot_download(repo_id, **kwargs)
        except BaseException as e:  # handed to the main thread, which explains it
            failures.append(e)

    with warnings.catch_warnings():
        # huggingface_hub warns, in lines of its own, when free space looks short; a disk that
        # does fill up ends the command with one error line naming the folder instead.
        warnings.filterwarnings("ignore", message="Not enough free disk space")
        thread = threading.Thread(target=fetch, name="tune-download", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(_POLL_SECONDS)
    if failures:
        raise failures[0]


def _finish_staging(staging: Path, repo_id: str, commit: str) -> List[str]:
    """Drop huggingface_hub's bookkeeping, write the record; returns the downloaded files."""
    # `.cache/huggingface` is for resuming into local_dir; the staging folder is thrown away
    # on failure, so it has no use.
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    _write_json_atomically(staging / RECORD_FILE, {"repo_id": repo_id, "revision": commit})
    return files


def _move_into_place(staging: Path, output_dir: Path, files: Sequence[str]) -> None:
    if staging.parent != output_dir:
        staging.rename(output_dir)  # atomic: the folder appears complete or not at all
        return
    # Merge into the existing folder, keeping files the repo doesn't have. The old record goes
    # first and the new one comes last, so a crash mid-merge leaves a folder without a record.
    (output_dir / RECORD_FILE).unlink(missing_ok=True)
    for name in files:
        target = output_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
    os.replace(staging / RECORD_FILE, output_dir / RECORD_FILE)
    shutil.rmtree(staging, ignore_errors=True)  # only emptied folders are left in it


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM for a block that takes milliseconds and must not stop
    halfway (the moves into place, the removal of the staging folder). After the moves the
    download is complete, so a signal that came during them has nothing left to stop and is
    dropped.

    Only the main thread may change signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _explain_hub_errors(repo_id: str, token: Optional[str], output_dir: Optional[Path]) -> Iterator[None]:
    """Turn huggingface_hub's and the transport's exceptions into a one-line DownloadError;
    ``output_dir`` is named when the disk refuses a file."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    hub = constants.ENDPOINT
    give_token = "pass a token with --hf-token or set HF_TOKEN"
    try:
        yield
    except GatedRepoError:
        who = "the token's account has no access" if token else "no token was given"
        raise DownloadError(
            f"'{repo_id}' is a gated repo and {who}: request access at {hub}/{repo_id}, "
            "then pass that account's token with --hf-token or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        hint = "or the token has no access to it" if token else f"or if it is private, {give_token}"
        raise DownloadError(f"repo '{repo_id}' was not found on {hub}: check the repo id, {hint}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401 and token:
            raise DownloadError(
                f"{hub} rejected the token while downloading '{repo_id}' (401 Unauthorized): "
                f"create a read token at {hub}/settings/tokens and {give_token}"
            ) from None
        if status == 401:
            raise DownloadError(f"'{repo_id}' needs authentication (401 Unauthorized): {give_token}") from None
        detail = _first_line(getattr(e, "server_message", None) or str(e))
        raise DownloadError(f"{hub} answered {status} while downloading '{repo_id}': {detail}") from None
    except HFValidationError as e:
        raise DownloadError(f"'{repo_id}' is not a valid repo id: {_first_line(str(e))}") from None
    except ValueError as e:
        if "Invalid filename" not in str(e):  # huggingface_hub's refusal of such a name
            raise
        raise DownloadError(f"cannot download '{repo_id}': {_first_line(str(e))}") from None
    except OfflineModeIsEnabled:
        raise DownloadError(f"cannot download '{repo_id}': HF_HUB_OFFLINE is set; unset it") from None
    except (LocalEntryNotFoundError, *_network_errors()) as e:
        raise DownloadError(
            f"could not reach {hub} to download '{repo_id}' ({type(e).__name__}): check the network "
            "connection (and HF_ENDPOINT if set), then run the command again"
        ) from None
    except OSError as e:
        where = f" into {output_dir}" if output_dir else ""
        raise DownloadError(f"cannot save the files of '{repo_id}'{where}: {_os_reason(e)}") from None


@contextlib.contextmanager
def _explain_os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise DownloadError(f"{what}: {_os_reason(e)}") from None


def _os_reason(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or _first_line(str(e))}{where}"


def _network_errors() -> tuple:
    """Transport-level failure types of whichever HTTP client huggingface_hub has loaded."""
    errors = [ConnectionError, TimeoutError]
    httpx2 = sys.modules.get("httpx2") or sys.modules.get("httpx")
    if httpx2 is not None:
        errors.append(httpx2.TransportError)
    requests = sys.modules.get("requests")
    if requests is not None:
        errors += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    return tuple(errors)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _redact(text: str, token: Optional[str]) -> str:
    return text.replace(token, "<token>") if token else text
