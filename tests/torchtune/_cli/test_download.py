"""`tune download` end to end: the real CLI in a subprocess, talking to a real HTTP server on
127.0.0.1 that speaks the Hub's API (tests/torchtune/_cli/hub_server.py), pointed to with
HF_ENDPOINT. huggingface_hub itself is not patched.

Full disks, read-only folders and mount points are real too: those tests run the command in a
user and mount namespace of its own (``unshare``) with a small tmpfs mounted where needed, and
are skipped where the system doesn't allow that."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from hub_server import HubRepo, HubServer

from torchtune._cli import download as download_module
from torchtune._errors import UserError

RECORD = ".tune_download.json"
GOOD_TOKEN = "hf_goodTokenThatMustNeverBePrinted0123"
UNGRANTED_TOKEN = "hf_validButNotGrantedToken4567"
BAD_TOKEN = "hf_revokedTokenNobodyKnows89ab"

# A Llama-like repo: HF .bin shards and a duplicate safetensors copy, Meta files in a
# subfolder, small text files. Weights-like files are served as LFS blobs via the "CDN".
LLAMA = {
    "README.md": b"# tiny llama\n",
    ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
    "config.json": b'{"hidden_size": 8, "num_attention_heads": 2}\n',
    "tokenizer.model": bytes(range(256)) * 3,
    "pytorch_model-00001-of-00002.bin": bytes(range(7, 250)) * 40,
    "pytorch_model-00002-of-00002.bin": bytes(range(3, 200)) * 30,
    "pytorch_model.bin.index.json": b'{"weight_map": {}}\n',
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(100)) * 9,
    "original/params.json": b'{"dim": 8}\n',
    "original/consolidated.00.pth": bytes(range(50, 150)) * 20,
}
SAFETENSORS_ONLY = {
    "config.json": b'{"hidden_size": 4}\n',
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(60)) * 5,
    "training_args.bin": b"not weights",
}
# meta-llama/Llama-3.1-8B-Instruct's layout: HF safetensors shards at the top, Meta's copy
# (with the params.json and tokenizer.model that Meta-format configs read) in original/.
LLAMA3 = {
    "config.json": b'{"model_type": "llama", "tie_word_embeddings": false}\n',
    "generation_config.json": b'{"eos_token_id": [1, 2]}\n',
    "model-00001-of-00002.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(11, 111)) * 7,
    "model-00002-of-00002.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(21, 91)) * 6,
    "model.safetensors.index.json": b'{"weight_map": {}}\n',
    "tokenizer.json": b'{"version": "1.0"}\n',
    "tokenizer_config.json": b"{}\n",
    "special_tokens_map.json": b"{}\n",
    "original/consolidated.00.pth": bytes(range(33, 233)) * 11,
    "original/params.json": b'{"dim": 8, "use_scaled_rope": true}\n',
    "original/tokenizer.model": bytes(range(200, 256)) * 5,
}
# Meta's Llama 2 repo (meta-llama/Llama-2-7b): the Meta copy only, at the top level.
LLAMA2_META = {
    "consolidated.00.pth": bytes(range(77, 177)) * 13,
    "params.json": b'{"dim": 16}\n',
    "tokenizer.model": bytes(range(0, 99)) * 4,
}
SHA = "1f0e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
# Served at 2 KiB/s, the weights take 20 s: a test can stop the command mid-transfer. (The
# bytes are unlike any other repo's, as the CDN finds a blob, and its speed, by content.)
SLOW = {"config.json": b'{"slow": true}\n', "model.bin": bytes(range(255, 0, -1)) * 160}
SLOW_SECONDS = len(SLOW["model.bin"]) / 2048
# 200 KiB of weights: more than the 64 KiB tmpfs of the full-disk test holds.
BIG = {"config.json": b'{"big": true}\n', "model.bin": bytes(range(1, 201)) * 1024}
# Listings the Hub never gives, but a mirror or a compromised endpoint could: a name that
# climbs out of the output folder.
CLIMBING = {
    "up": {"config.json": b"{}\n", "../escaped.txt": b"outside\n"},
    "down-then-up": {"config.json": b"{}\n", "a/../../escaped.txt": b"outside\n"},
    "absolute": {"config.json": b"{}\n", "/tmp/escaped.txt": b"outside\n"},
}


def make_hub() -> HubServer:
    return HubServer(
        repos={
            "tiny/llama": HubRepo(LLAMA, sha=SHA),
            "tiny/st-only": HubRepo(SAFETENSORS_ONLY),
            "tiny/llama3": HubRepo(LLAMA3),
            "tiny/llama2-meta": HubRepo(LLAMA2_META),
            "meta/gated": HubRepo(LLAMA, gated=True),
            "someone/private": HubRepo(SAFETENSORS_ONLY, private=True),
            "tiny/slow": HubRepo(SLOW, bytes_per_second=2048),
            "tiny/big": HubRepo(BIG),
            **{f"evil/{name}": HubRepo(files) for name, files in CLIMBING.items()},
        },
        tokens={GOOD_TOKEN: {"meta/gated", "someone/private"}, UNGRANTED_TOKEN: set()},
    )


@pytest.fixture(scope="module")
def _hub_server():
    with make_hub() as server:
        yield server


@pytest.fixture
def hub(_hub_server):
    _hub_server.requests.clear()
    return _hub_server


def tune_env(endpoint: str, tmp_path: Path, hf_token_env: Optional[str] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf_home"),  # no stored login, no shared cache
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if hf_token_env is not None:
        env["HF_TOKEN"] = hf_token_env
    return env


def tune_command(*args: str) -> List[str]:
    return [sys.executable, "-m", "torchtune._cli.tune", "download", *args]


def tune_download(
    endpoint: str, tmp_path: Path, *args: str, hf_token_env: Optional[str] = None, umask: int = -1
) -> subprocess.CompletedProcess:
    return subprocess.run(
        tune_command(*args),
        env=tune_env(endpoint, tmp_path, hf_token_env),
        capture_output=True,
        text=True,
        timeout=60,
        umask=umask,
    )


def files_under(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_downloads_repo_and_writes_record(hub, tmp_path):
    out = tmp_path / "models" / "llama"
    result = tune_download(hub.endpoint, tmp_path, "tiny/llama", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr

    # The default skips the safetensors copy of weights the repo also has as .bin/.pth.
    expected = {k: v for k, v in LLAMA.items() if k != "model.safetensors"}
    got = files_under(out)
    record = json.loads(got.pop(RECORD))
    assert got == expected
    assert record == {"repo_id": "tiny/llama", "revision": SHA}
    assert str(out) in result.stdout
    assert "model.safetensors" not in {r.path.rsplit("/", 1)[-1] for r in hub.requests}
    # Weights came the Hub's LFS way: a redirect, then the bytes from the other host.
    assert any(r.server == "cdn" and r.method == "GET" for r in hub.requests)
    # The staging folder is gone: the parent holds just the finished folder.
    assert [p.name for p in out.parent.iterdir()] == ["llama"]


def test_llama3_repo_default_skips_meta_weights_but_keeps_its_tokenizer_and_params(hub, tmp_path):
    out = tmp_path / "out"
    result = tune_download(hub.endpoint, tmp_path, "tiny/llama3", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    got = files_under(out)
    assert {k: v for k, v in got.items() if k != RECORD} == {
        k: v for k, v in LLAMA3.items() if k != "original/consolidated.00.pth"
    }
    # Never fetched, not just deleted afterwards.
    assert not [r for r in hub.requests if r.path.endswith("consolidated.00.pth")]
    assert "original/*consolidated*.pth" in result.stdout


@pytest.mark.parametrize(
    "repo, args, expected",
    [
        ("tiny/st-only", [], set(SAFETENSORS_ONLY)),
        ("tiny/llama2-meta", [], set(LLAMA2_META)),
        ("tiny/llama3", ["--ignore-patterns", ""], set(LLAMA3)),
        ("tiny/llama3", ["--ignore-patterns", "*.safetensors"], set(LLAMA3) - {
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}),
        ("tiny/llama", ["--ignore-patterns", ""], set(LLAMA)),
        (
            "tiny/llama",
            ["--ignore-patterns", "*.bin", "--ignore-patterns", "original/*"],
            set(LLAMA) - {"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"}
            - {"original/params.json", "original/consolidated.00.pth"},
        ),
    ],
    ids=["safetensors-only-repo-kept", "llama2-meta-repo-kept", "llama3-empty-pattern-downloads-all",
         "llama3-meta-copy-on-request", "empty-pattern-downloads-all", "repeated-patterns"],
)
def test_ignore_patterns(hub, tmp_path, repo, args, expected):
    out = tmp_path / "out"
    # --repo-id is the spelling older docs use.
    result = tune_download(hub.endpoint, tmp_path, "--repo-id", repo, "--output-dir", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert set(files_under(out)) == expected | {RECORD}


@pytest.mark.parametrize("via", ["flag", "env"])
def test_token_reaches_hub_but_never_output(hub, tmp_path, via):
    out = tmp_path / "gated"
    flag = ["--hf-token", GOOD_TOKEN] if via == "flag" else []
    env_token = GOOD_TOKEN if via == "env" else None
    result = tune_download(
        hub.endpoint, tmp_path, "meta/gated", "--output-dir", str(out), *flag, hf_token_env=env_token
    )
    assert result.returncode == 0, result.stderr
    assert files_under(out)["tokenizer.model"] == LLAMA["tokenizer.model"]

    hub_auth = {r.authorization for r in hub.requests if r.server == "hub"}
    assert hub_auth == {f"Bearer {GOOD_TOKEN}"}
    # The signed CDN urls need no token, and the token must not leave the Hub.
    assert {r.authorization for r in hub.requests if r.server == "cdn"} == {None}
    assert GOOD_TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "repo, token, needles",
    [
        ("meta/gated", None, ["'meta/gated' is a gated repo", "no token was given", "/meta/gated"]),
        ("meta/gated", UNGRANTED_TOKEN, ["'meta/gated' is a gated repo", "has no access"]),
        ("tiny/llama", BAD_TOKEN, ["rejected the token", "'tiny/llama'", "401"]),
        ("nobody/missing", None, ["'nobody/missing' was not found", "--hf-token"]),
        ("someone/private", UNGRANTED_TOKEN, ["'someone/private' was not found", "no access"]),
    ],
    ids=["gated-no-token", "gated-not-granted", "bad-token-401", "missing-404", "private-404"],
)
def test_hub_refusals_are_one_line_and_leave_nothing(hub, tmp_path, repo, token, needles):
    out = tmp_path / "models" / "out"
    flag = ["--hf-token", token] if token else []
    result = tune_download(hub.endpoint, tmp_path, repo, "--output-dir", str(out), *flag)
    assert_one_line_error(result, *needles)
    assert "Traceback" not in result.stderr
    if token:
        assert token not in result.stdout + result.stderr
    # Not even the parent folder, made for the gated repo's download, which got as far as the
    # transfer (its README.md is public).
    assert not (tmp_path / "models").exists()


def test_gated_failure_after_partial_download_leaves_existing_folder_untouched(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / RECORD).write_text('{"repo_id": "old/model", "revision": "abc"}')
    before = files_under(out)

    result = tune_download(hub.endpoint, tmp_path, "meta/gated", "--output-dir", str(out))
    assert_one_line_error(result, "gated")
    # README.md is public in a gated repo, so it was fetched before the refusal: the
    # partial download existed and has been thrown away.
    assert any(r.method == "GET" and r.path.endswith("/README.md") for r in hub.requests)
    assert files_under(out) == before
    # The staging folder (inside an existing output folder) is gone too.
    assert sorted(os.listdir(out)) == sorted([RECORD, "notes.txt"])
    assert [p.name for p in tmp_path.iterdir() if p.name != "hf_home"] == ["out"]


def test_download_into_existing_folder_keeps_other_files(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = tune_download(hub.endpoint, tmp_path, "tiny/st-only", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    got = files_under(out)
    assert got.pop("notes.txt") == b"mine"
    assert json.loads(got.pop(RECORD))["repo_id"] == "tiny/st-only"
    assert got == SAFETENSORS_ONLY
    assert sorted(os.listdir(out)) == sorted([*SAFETENSORS_ONLY, "notes.txt", RECORD])


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
@pytest.mark.parametrize("name", sorted(CLIMBING))
def test_listing_entry_outside_the_folder_is_refused_before_anything_is_written(hub, tmp_path, name, existing):
    out = tmp_path / "models" / "out"
    if existing:
        out.mkdir(parents=True)
    (entry,) = [f for f in CLIMBING[name] if f != "config.json"]
    result = tune_download(hub.endpoint, tmp_path, f"evil/{name}", "--output-dir", str(out))
    assert_one_line_error(
        result, f"the Hub lists a file of 'evil/{name}' named {entry!r}", f"outside --output-dir {out}",
        "nothing was downloaded",
    )
    assert "Traceback" not in result.stderr
    assert not any(r.path.startswith(f"/evil/{name}/resolve/") for r in hub.requests)  # no file fetched
    assert not [p for p in tmp_path.rglob("*escaped*")]
    assert not os.path.exists("/tmp/escaped.txt")
    if existing:
        assert os.listdir(out) == []
    else:
        assert not (tmp_path / "models").exists()


def test_server_down(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    result = tune_download(
        f"http://127.0.0.1:{port}", tmp_path, "tiny/llama", "--output-dir", str(out), "--hf-token", GOOD_TOKEN
    )
    line = assert_one_line_error(result, "could not reach", f"127.0.0.1:{port}", "'tiny/llama'")
    assert GOOD_TOKEN not in result.stdout + line
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["a/b", "--repo-id", "c/d", "--output-dir", "o"], "two repo ids"),
        (["--output-dir", "o"], "give the repo id"),
        (["a/b"], "the following arguments are required: --output-dir"),
    ],
    ids=["two-repo-ids", "no-repo-id", "no-output-dir"],
)
def test_argument_errors_are_one_line_with_status_1(tmp_path, args, needle):
    result = subprocess.run(
        tune_command(*args),
        env=tune_env("http://127.0.0.1:9", tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(result, needle)
    assert not (tmp_path / "o").exists()


def test_download_error_is_a_user_error():
    # The CLI convention: a UserError is reported as one `error:` line, without a traceback.
    assert issubclass(download_module.DownloadError, UserError)


def test_help_documents_default_ignore_patterns(tmp_path):
    result = tune_download("http://127.0.0.1:9", tmp_path, "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "--ignore-patterns" in help_text and "'*.safetensors'" in help_text
    assert "'original/*consolidated*.pth'" in help_text and "original/tokenizer.model" in help_text
    assert "--ignore-patterns ''" in help_text
    assert "--repo-id" in help_text and "HF_TOKEN" in help_text
    assert "--force" in help_text and "Folders are never replaced" in help_text


# --- Files already in --output-dir --------------------------------------------------------


def fetched_files(hub: HubServer) -> List[str]:
    """The repo files the command asked the Hub or its CDN for (not the API calls)."""
    return [r.path for r in hub.requests if r.server == "cdn" or "/resolve/" in r.path]


def test_refuses_to_replace_files_of_the_same_names(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("edited by hand")
    (out / "notes.txt").write_text("mine")
    before = files_under(out)

    result = tune_download(hub.endpoint, tmp_path, "tiny/st-only", "--output-dir", str(out))
    assert_one_line_error(result, str(out), "config.json", "pass --force to replace them")
    assert "notes.txt" not in result.stderr
    assert fetched_files(hub) == []  # refused before the transfer
    assert files_under(out) == before
    assert sorted(os.listdir(out)) == ["config.json", "notes.txt"]  # no staging folder


def test_redownload_is_refused_and_force_replaces_files_and_record(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    first = tune_download(hub.endpoint, tmp_path, "tiny/st-only", "--output-dir", str(out))
    assert first.returncode == 0, first.stderr
    after_first = files_under(out)

    hub.requests.clear()
    again = tune_download(hub.endpoint, tmp_path, "tiny/st-only", "--output-dir", str(out))
    assert_one_line_error(again, "3 files", "model.safetensors", "pass --force to replace them")
    assert fetched_files(hub) == []
    assert files_under(out) == after_first

    # Another repo sharing config.json, forced in: its files replace the old ones, the rest stay.
    forced = tune_download(hub.endpoint, tmp_path, "tiny/llama", "--output-dir", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    got = files_under(out)
    assert json.loads(got.pop(RECORD)) == {"repo_id": "tiny/llama", "revision": SHA}
    kept = {"notes.txt": b"mine", **{k: v for k, v in SAFETENSORS_ONLY.items() if k != "config.json"}}
    assert got == {**kept, **{k: v for k, v in LLAMA.items() if k != "model.safetensors"}}


def test_ignored_repo_files_do_not_clash(hub, tmp_path):
    # The default skips the repo's model.safetensors, so the user's own file of that name stays.
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"my own weights")
    result = tune_download(hub.endpoint, tmp_path, "tiny/llama", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert files_under(out)["model.safetensors"] == b"my own weights"
    assert files_under(out)["config.json"] == LLAMA["config.json"]


@pytest.mark.parametrize("in_the_way", ["folder-for-file", "file-for-folder"])
def test_force_never_replaces_a_folder_or_a_file_standing_for_one(hub, tmp_path, in_the_way):
    out = tmp_path / "out"
    out.mkdir()
    if in_the_way == "folder-for-file":
        (out / "config.json").mkdir()
        (out / "config.json" / "keep.txt").write_text("mine")
    else:
        (out / "original").write_text("a file where the repo has a folder")
    before = files_under(out)

    result = tune_download(hub.endpoint, tmp_path, "tiny/llama", "--output-dir", str(out), "--force")
    name = "config.json" if in_the_way == "folder-for-file" else "original/params.json"
    assert_one_line_error(result, "in the way", name, "move them away")
    assert fetched_files(hub) == []
    assert files_under(out) == before


# --- Ctrl-C ------------------------------------------------------------------------------


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_ctrl_c_mid_transfer_stops_at_once_and_leaves_nothing(hub, tmp_path, existing):
    out = tmp_path / "models" / "out"
    if existing:
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("mine")
    before = files_under(out) if existing else None
    # A shell without job control starts background jobs (`pytest &`) with SIGINT ignored,
    # and a child inherits that, so Python would install no KeyboardInterrupt handler. A
    # terminal's Ctrl-C always reaches tune: start it as one would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            tune_command("tiny/slow", "--output-dir", str(out)),
            env=tune_env(hub.endpoint, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        wait_for(lambda: any(r.server == "cdn" and r.method == "GET" for r in hub.requests), "the weights")
        time.sleep(0.3)  # well into the 20 s body
        staged = [*out.parent.glob(".out.*.incomplete"), *out.glob(".out.*.incomplete")]
        assert len(staged) == 1, "the transfer should be writing into a staging folder"

        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=5)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()

    assert elapsed < 2.0, f"took {elapsed:.1f}s to stop (the transfer alone takes {SLOW_SECONDS:.0f}s)"
    assert proc.returncode == 130, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "interrupted" in lines[0] and f"{out} is unchanged" in lines[0]
    assert not staged[0].exists()
    if existing:
        assert files_under(out) == before
        assert os.listdir(out) == ["notes.txt"]
    else:
        assert not (tmp_path / "models").exists()  # neither the output folder nor its parent


def start_slow_download(hub: HubServer, tmp_path: Path, out: Path) -> subprocess.Popen:
    """`tune download tiny/slow` in a subprocess, returned once the weights are in flight."""
    proc = subprocess.Popen(
        tune_command("tiny/slow", "--output-dir", str(out)),
        env=tune_env(hub.endpoint, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: any(r.server == "cdn" and r.method == "GET" for r in hub.requests), "the weights")
    time.sleep(0.3)  # well into the 20 s body
    return proc


def staging_folders(out: Path) -> List[Path]:
    return [*out.parent.glob(f".{out.name}.*.incomplete"), *out.glob(f".{out.name}.*.incomplete")]


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_sigterm_mid_transfer_cleans_up_like_ctrl_c(hub, tmp_path, existing):
    out = tmp_path / "models" / "out"
    if existing:
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("mine")
    proc = start_slow_download(hub, tmp_path, out)
    try:
        assert len(staging_folders(out)) == 1
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=5)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, stderr  # 128 + SIGTERM, as a shell reports a killed job
    lines = stderr.splitlines()
    assert lines == [f"error: download of 'tiny/slow' terminated; {out} is unchanged"], stderr
    assert staging_folders(out) == []
    if existing:
        assert os.listdir(out) == ["notes.txt"]
    else:
        assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_next_download_removes_the_staging_folder_a_killed_one_left(hub, tmp_path, existing):
    # SIGKILL (or a crash, or SIGTERM before tune handled it) leaves .out.XXXXXXXX.incomplete.
    out = tmp_path / "models" / "out"
    if existing:
        out.mkdir(parents=True)
    proc = start_slow_download(hub, tmp_path, out)
    proc.kill()
    proc.communicate(timeout=5)
    (left,) = staging_folders(out)
    assert any(left.rglob("*.incomplete")), "the killed transfer should have left a partial file"

    # A staging folder of a download still running (it holds the lock) must be kept.
    live = left.with_name(f".{out.name}.0123abcd.incomplete")
    live.mkdir()
    held = os.open(live, os.O_RDONLY)
    try:
        fcntl = pytest.importorskip("fcntl")
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        slow = hub.repos["tiny/slow"]
        slow.bytes_per_second = None  # the same repo again, at full speed this time
        try:
            result = tune_download(hub.endpoint, tmp_path, "tiny/slow", "--output-dir", str(out))
        finally:
            slow.bytes_per_second = 2048
        assert result.returncode == 0, result.stderr
        assert not left.exists()
        assert staging_folders(out) == [live]
    finally:
        os.close(held)
    live.rmdir()
    assert files_under(out) == {**SLOW, RECORD: (out / RECORD).read_bytes()}
    assert sorted(os.listdir(out.parent)) == ["out"]


def test_ctrl_c_is_ignored_while_files_are_moved_into_place():
    # The moves and the removal of the staging folder take milliseconds and must not stop
    # halfway; afterwards Ctrl-C works again. SIGTERM (which tune download turns into the
    # same cleanup) is held off the same way.
    handler = signal.getsignal(signal.SIGINT)
    term_handler = signal.signal(signal.SIGTERM, download_module._raise_terminated)
    try:
        with download_module._interrupts_ignored():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # a Python signal handler runs within this
    except KeyboardInterrupt:
        pytest.fail("a signal interrupted the block")
    finally:
        assert signal.getsignal(signal.SIGTERM) is download_module._raise_terminated
        signal.signal(signal.SIGTERM, term_handler)
    assert signal.getsignal(signal.SIGINT) is handler


# --- Permissions --------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_created_folders_and_files_follow_the_umask(hub, tmp_path, umask):
    out = tmp_path / "models" / "out"
    result = tune_download(hub.endpoint, tmp_path, "tiny/llama", "--output-dir", str(out), umask=umask)
    assert result.returncode == 0, result.stderr

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    for folder in (out.parent, out, out / "original"):
        assert mode(folder) == 0o777 & ~umask, f"{folder}: {oct(mode(folder))}"
    for file in (out / "config.json", out / "original" / "consolidated.00.pth", out / RECORD):
        assert mode(file) == 0o666 & ~umask, f"{file}: {oct(mode(file))}"


# --- Full disks, read-only folders, mount points (a tmpfs in a namespace of its own) ----------


READ_ONLY = "mount --bind {0} {0} && mount -o remount,bind,ro {0}"  # the folder, files and all


@pytest.fixture(scope="module")
def own_mounts():
    """Skip unless this system lets an unprivileged user mount a tmpfs, and make a folder
    read-only, in a namespace of its own."""
    mounts = "mount -t tmpfs tmpfs /mnt && " + READ_ONLY.format("/mnt")
    probe = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mounts]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("needs unshare and user namespaces to mount a tmpfs")


def tune_download_with_mounts(
    endpoint: str, tmp_path: Path, mounts: str, *args: str, afterwards: str = "true"
) -> subprocess.CompletedProcess:
    """Run `tune download` after the shell commands ``mounts``, in a mount namespace of its own;
    ``afterwards`` runs before the namespace (and what is mounted in it) goes away."""
    script = f'set -e\n{mounts}\nset +e\n"$@"\nstatus=$?\n{afterwards}\nexit $status'
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *tune_command(*args)],
        env=tune_env(endpoint, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_full_disk_is_one_error_line_naming_the_folder(hub, tmp_path, own_mounts):
    disk = tmp_path / "disk"
    disk.mkdir()
    left = tmp_path / "left_on_disk.txt"
    result = tune_download_with_mounts(
        hub.endpoint,
        tmp_path,
        f"mount -t tmpfs -o size=64k tmpfs {disk}",
        "tiny/big",
        "--output-dir",
        str(disk / "out"),
        afterwards=f"ls -A {disk} > {left}",
    )
    assert_one_line_error(result, "No space left on device", str(disk / "out"))
    assert left.read_text() == ""  # no output folder, no staging folder


@pytest.mark.parametrize(
    "mounts, folder, needle",
    [
        (READ_ONLY, "out", "out is not writable"),
        (READ_ONLY, "out/original", "original: it is read-only or on another filesystem"),
        ("mount -t tmpfs tmpfs {0}", "out/original", "original: it is read-only or on another filesystem"),
    ],
    ids=["read-only-output-folder", "read-only-sub-folder", "sub-folder-on-another-filesystem"],
)
def test_unwritable_target_is_refused_before_downloading(hub, tmp_path, own_mounts, mounts, folder, needle):
    out = tmp_path / "out"
    (out / "original").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    result = tune_download_with_mounts(
        hub.endpoint, tmp_path, mounts.format(tmp_path / folder), "tiny/llama", "--output-dir", str(out)
    )
    assert_one_line_error(result, needle)
    assert fetched_files(hub) == []
    # Nothing was merged halfway (the files renamed before the refusing folder's turn).
    assert files_under(out) == {"notes.txt": b"mine"}
    assert sorted(os.listdir(out)) == ["notes.txt", "original"]


def test_output_folder_may_be_a_mount_point(hub, tmp_path, own_mounts):
    # An empty volume mounted as the output folder can't be replaced by a renamed folder: the
    # files are staged on it and moved in.
    out = tmp_path / "out"
    out.mkdir()
    listing, config = tmp_path / "listing.txt", tmp_path / "config.json"
    result = tune_download_with_mounts(
        hub.endpoint,
        tmp_path,
        f"mount -t tmpfs tmpfs {out}",
        "tiny/st-only",
        "--output-dir",
        str(out),
        afterwards=f"ls -A {out} > {listing}; cp {out}/config.json {config}",
    )
    assert result.returncode == 0, result.stderr
    assert set(listing.read_text().split()) == {*SAFETENSORS_ONLY, RECORD}  # no staging folder
    assert config.read_bytes() == SAFETENSORS_ONLY["config.json"]
