"""`tune download`: fetch a model repo from the Hugging Face Hub into a local folder.

The files are downloaded into a hidden temporary sibling of the output folder and moved into
place only once every file has arrived, so a refused, interrupted or failed download never
leaves a folder that looks complete. The finished folder also holds ``.tune_download.json``
(``{"repo_id": ..., "revision": <commit sha>}``); the checkpointers read it to fill
``base_model_name_or_path`` when they write PEFT adapter configs.

The access token comes from ``--hf-token``, else ``HF_TOKEN``, else huggingface_hub's stored
login. It is only ever handed to huggingface_hub, and it is scrubbed from every message we
print.
"""

import argparse
import contextlib
import fnmatch
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

RECORD_FILE = ".tune_download.json"

# Hub repos often carry the same weights twice: as safetensors and as `pytorch_model*.bin`
# (HF) or `consolidated.*.pth` (Meta). The seed's configs name the .bin / .pth files, so by
# default we skip the safetensors copy, but only when one of the other copies is there:
# a safetensors-only repo is downloaded whole.
_DUPLICATE_WEIGHTS = "*.safetensors"
_OTHER_WEIGHTS = ("pytorch_model*.bin", "*consolidated*.pth")

_HELP_IGNORE = (
    "glob of repo files not to download; repeat the flag for several. Default: '*.safetensors' "
    "when the repo also holds the weights as pytorch_model*.bin or consolidated*.pth (the "
    "same weights twice), otherwise nothing. Pass --ignore-patterns '' to download every file."
)


class DownloadError(Exception):
    """A download that cannot go on; the message is one line for the user."""


def add_subparser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "download",
        help="download a model from the Hugging Face Hub",
        description="Download a model repo from the Hugging Face Hub into --output-dir. Files "
        "arrive in a temporary folder next to it and are moved in only when all are there; "
        f"the folder then holds {RECORD_FILE} with the repo id and commit sha.",
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
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.repo_id and args.repo_id_flag and args.repo_id != args.repo_id_flag:
        print(
            f"error: two repo ids given ({args.repo_id} and --repo-id {args.repo_id_flag})", file=sys.stderr
        )
        return 2
    repo_id = args.repo_id or args.repo_id_flag
    if not repo_id:
        print("error: give the repo id, e.g. tune download meta-llama/Llama-2-7b", file=sys.stderr)
        return 2
    token = args.hf_token or os.environ.get("HF_TOKEN") or None
    try:
        download(repo_id, args.output_dir, token=token, ignore_patterns=args.ignore_patterns)
    except DownloadError as e:
        print(f"error: {_redact(str(e), token)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: download of '{repo_id}' interrupted; {args.output_dir} is unchanged", file=sys.stderr)
        return 130
    return 0


def download(
    repo_id: str,
    output_dir: Path,
    *,
    token: Optional[str] = None,
    ignore_patterns: Optional[Sequence[str]] = None,
) -> List[str]:
    """Download the files of Hub model repo ``repo_id`` at its main branch into ``output_dir``.

    Args:
        repo_id (str): Hub repo id, e.g. ``meta-llama/Llama-2-7b``.
        output_dir (Path): folder to put the files in. It is created if missing; files already
            there that the repo doesn't have are kept.
        token (Optional[str]): Hub access token; None lets huggingface_hub look for one.
        ignore_patterns (Optional[Sequence[str]]): globs of repo files to skip; None applies the
            default described in ``tune download --help``; empty strings are dropped.

    Returns:
        List[str]: the downloaded files, relative to ``output_dir``.

    Raises:
        DownloadError: the repo can't be reached, read or written to disk. ``output_dir`` is
            unchanged, unless moving into an existing folder failed midway: then it is left
            without a ``.tune_download.json``.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    output_dir = output_dir.expanduser().absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise DownloadError(f"--output-dir {output_dir} exists and is not a folder")

    api = HfApi(token=token)
    with _explain_hub_errors(repo_id, token):
        info = api.model_info(repo_id)
        commit = info.sha
        if not commit:
            raise DownloadError(f"{constants.ENDPOINT} did not report the commit of '{repo_id}'")
        if info.siblings is not None:
            repo_files = [s.rfilename for s in info.siblings]
        else:
            repo_files = api.list_repo_files(repo_id, revision=commit)

    patterns = _ignore_patterns(ignore_patterns, repo_files)
    skipped = [f for f in repo_files if any(fnmatch.fnmatch(f, p) for p in patterns)]
    if ignore_patterns is None and skipped:
        print(
            f"Skipping {len(skipped)} {_DUPLICATE_WEIGHTS} files that repeat the weights of the "
            ".bin/.pth files; pass --ignore-patterns '' to download them too."
        )

    with _explain_os_errors(f"cannot create a folder next to --output-dir {output_dir}"):
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        # A sibling, so the final move is a rename on the same filesystem.
        staging = Path(
            tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".incomplete", dir=output_dir.parent)
        )
    try:
        with _explain_hub_errors(repo_id, token):
            # Pinning the commit makes every file come from the same snapshot we recorded.
            snapshot_download(
                repo_id, revision=commit, local_dir=staging, token=token, ignore_patterns=patterns or None
            )
        with _explain_os_errors(f"cannot move the downloaded files into {output_dir}"):
            # huggingface_hub's bookkeeping for resuming into local_dir; the staging folder
            # is thrown away on failure, so it has no use.
            shutil.rmtree(staging / ".cache", ignore_errors=True)
            files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
            _write_json_atomically(staging / RECORD_FILE, {"repo_id": repo_id, "revision": commit})
            _move_into_place(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(f"Downloaded {repo_id} at commit {commit} ({len(files)} files) to {output_dir}:")
    for name in files:
        print(f"  {output_dir / name}")
    return files


def _ignore_patterns(requested: Optional[Sequence[str]], repo_files: Sequence[str]) -> List[str]:
    if requested is not None:
        return [p for p in requested if p]
    has_other_weights = any(fnmatch.fnmatch(f, p) for f in repo_files for p in _OTHER_WEIGHTS)
    return [_DUPLICATE_WEIGHTS] if has_other_weights else []


def _move_into_place(staging: Path, output_dir: Path) -> None:
    if output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()
    if not output_dir.exists():
        staging.rename(output_dir)  # atomic: the folder appears complete or not at all
        return
    # Merge into an existing folder, keeping files the repo doesn't have. The old record goes
    # first and the new one comes last, so a crash mid-merge leaves a folder without a record.
    (output_dir / RECORD_FILE).unlink(missing_ok=True)
    for path in sorted(staging.rglob("*")):
        if path.is_file() and path.name != RECORD_FILE:
            target = output_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    os.replace(staging / RECORD_FILE, output_dir / RECORD_FILE)


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _explain_hub_errors(repo_id: str, token: Optional[str]) -> Iterator[None]:
    """Turn huggingface_hub's and the transport's exceptions into a one-line DownloadError."""
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
    except OfflineModeIsEnabled:
        raise DownloadError(f"cannot download '{repo_id}': HF_HUB_OFFLINE is set; unset it") from None
    except (LocalEntryNotFoundError, *_network_errors()) as e:
        raise DownloadError(
            f"could not reach {hub} to download '{repo_id}' ({type(e).__name__}): check the network "
            "connection (and HF_ENDPOINT if set), then run the command again"
        ) from None
    except OSError as e:
        raise DownloadError(f"cannot save the files of '{repo_id}': {_os_reason(e)}") from None


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
