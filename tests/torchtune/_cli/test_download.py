"""`tune download` end to end: the real CLI in a subprocess, talking to a real HTTP server on
127.0.0.1 that speaks the Hub's API (tests/torchtune/_cli/hub_server.py), pointed to with
HF_ENDPOINT. huggingface_hub itself is not patched."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
from hub_server import HubRepo, HubServer

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
SHA = "1f0e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"


def make_hub() -> HubServer:
    return HubServer(
        repos={
            "tiny/llama": HubRepo(LLAMA, sha=SHA),
            "tiny/st-only": HubRepo(SAFETENSORS_ONLY),
            "meta/gated": HubRepo(LLAMA, gated=True),
            "someone/private": HubRepo(SAFETENSORS_ONLY, private=True),
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


def tune_download(
    endpoint: str, tmp_path: Path, *args: str, hf_token_env: Optional[str] = None
) -> subprocess.CompletedProcess:
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
    return subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "download", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
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


@pytest.mark.parametrize(
    "repo, args, expected",
    [
        ("tiny/st-only", [], set(SAFETENSORS_ONLY)),
        ("tiny/llama", ["--ignore-patterns", ""], set(LLAMA)),
        (
            "tiny/llama",
            ["--ignore-patterns", "*.bin", "--ignore-patterns", "original/*"],
            set(LLAMA) - {"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"}
            - {"original/params.json", "original/consolidated.00.pth"},
        ),
    ],
    ids=["safetensors-only-repo-kept", "empty-pattern-downloads-all", "repeated-patterns"],
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
    assert not out.exists()
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


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
    assert [p.name for p in tmp_path.iterdir() if p.name != "hf_home"] == ["out"]


def test_download_into_existing_folder_keeps_other_files(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("stale")
    result = tune_download(hub.endpoint, tmp_path, "tiny/st-only", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    got = files_under(out)
    assert got.pop("notes.txt") == b"mine"
    assert json.loads(got.pop(RECORD))["repo_id"] == "tiny/st-only"
    assert got == SAFETENSORS_ONLY


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
        (["a/b", "--repo-id", "c/d"], "two repo ids"),
        ([], "give the repo id"),
    ],
)
def test_repo_id_argument_errors(tmp_path, args, needle):
    result = tune_download("http://127.0.0.1:9", tmp_path, *args, "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2
    assert needle in result.stderr
    assert not (tmp_path / "o").exists()


def test_help_documents_default_ignore_patterns(tmp_path):
    result = tune_download("http://127.0.0.1:9", tmp_path, "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "--ignore-patterns" in help_text and "'*.safetensors'" in help_text
    assert "--ignore-patterns ''" in help_text
    assert "--repo-id" in help_text and "HF_TOKEN" in help_text
