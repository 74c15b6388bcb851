"""A file that is not a checkpoint at all (a JSON sidecar, /etc/passwd, a safetensors file
named .pt) or a 0.6.1 ``checkpoint_files`` pattern naming absurdly many shards: one line
naming the file, through the checkpointers and through `tune run`."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from torchtune import UserFileNotFoundError, UserValueError
from torchtune._cli.tune import main as tune_main
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)
from torchtune.training.checkpointing._core import expand_checkpoint_files

REPO = Path(__file__).resolve().parents[4]
PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


@pytest.mark.parametrize("checkpointer", [FullModelMetaCheckpointer, FullModelTorchTuneCheckpointer])
def test_json_file_given_as_torch_checkpoint(tmp_path, checkpointer):
    (tmp_path / "params.json").write_text(json.dumps({"dim": 32, "n_heads": 4, "n_layers": 2}))
    ckpt = checkpointer(str(tmp_path), ["params.json"], "LLAMA2", str(tmp_path / "out"))
    with pytest.raises(UserValueError) as err:
        ckpt.load_checkpoint()
    message = str(err.value)
    assert message == (
        f"checkpoint file {tmp_path}/params.json is not a torch.save file (it looks like JSON text)"
    )


@pytest.mark.parametrize("content, looks_like", [
    (PASSWD.encode(), "it looks like a text file"),
    (b"", "it is empty"),
    (bytes(range(1, 256)) * 4, "it holds binary data of another format"),
])
def test_absolute_path_to_other_files(tmp_path, content, looks_like):
    path = tmp_path / "elsewhere" / "passwd"
    path.parent.mkdir()
    path.write_bytes(content)
    ckpt = FullModelMetaCheckpointer(str(tmp_path), [str(path)], "LLAMA2", str(tmp_path / "out"))
    with pytest.raises(UserValueError, match=rf"^checkpoint file {path} is not a torch.save file \({looks_like}\)$"):
        ckpt.load_checkpoint()


def test_safetensors_file_named_pt(tmp_path):
    save_file({"tok_embeddings.weight": torch.zeros(2, 2)}, str(tmp_path / "model.pt"))
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["model.pt"], "LLAMA2", str(tmp_path / "out"))
    with pytest.raises(UserValueError, match=r"model\.pt is not a torch\.save file \(it looks like a safetensors file\)$"):
        ckpt.load_checkpoint()


def test_hf_checkpointer_names_a_file_of_no_weight_format(tmp_path, tiny):
    # It used to say "checkpoint_files must all be .bin/.pt/.pth or all .safetensors, got ['']".
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
    passwd = tmp_path / "etc" / "passwd"
    passwd.parent.mkdir()
    passwd.write_text(PASSWD)
    with pytest.raises(UserValueError) as err:
        FullModelHFCheckpointer(str(tmp_path), [str(passwd)], "LLAMA2", str(tmp_path / "out"))
    assert str(err.value) == (
        f"checkpoint file {passwd} is not a .safetensors, .bin, .pt or .pth file (it looks like a text file)"
    )
    bin_copy = tmp_path / "pytorch_model.bin"
    torch.save({}, bin_copy)
    with pytest.raises(UserValueError, match=r"mixes \.safetensors and torch\.save files: .*model\.safetensors.*pytorch_model\.bin"):
        FullModelHFCheckpointer(str(tmp_path), names + ["pytorch_model.bin"], "LLAMA2", str(tmp_path / "out"))


def test_pickled_code_refusal_never_advises_weights_only_false(tmp_path):
    torch.save({"x": torch.zeros(1), "obj": os.path.join}, tmp_path / "evil.pt")
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["evil.pt"], "LLAMA2", str(tmp_path / "out"))
    with pytest.raises(UserValueError) as err:
        ckpt.load_checkpoint()
    message = str(err.value)
    assert message.startswith(f"Refusing to load {tmp_path}/evil.pt: ")
    assert "posixpath.join" in message and "\n" not in message
    assert "weights_only" not in message.replace("weights_only loading never runs", "")

    # A pickle that is damaged, not malicious: PyTorch gives the same advice.
    (tmp_path / "damaged.pt").write_bytes(b"\x80\x02" + b"{" * 64)
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["damaged.pt"], "LLAMA2", str(tmp_path / "out"))
    with pytest.raises(UserValueError) as err:
        ckpt.load_checkpoint()
    assert str(err.value) == (
        f"Could not read checkpoint file {tmp_path}/damaged.pt: the file is truncated or corrupt "
        "(Unsupported operand 123)"
    )


def test_tune_run_with_a_json_checkpoint_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    passwd = tmp_path / "passwd"
    passwd.write_text(PASSWD)
    for files, expected in [
        ("[params.json]", f"checkpoint file {REPO / 'torchtune' / 'assets' / 'stories260K' / 'params.json'} is not a torch.save file (it looks like JSON text)"),
        (f"[{passwd}]", f"checkpoint file {passwd} is not a torch.save file (it looks like a text file)"),
    ]:
        status = tune_main(["run", "generate", "--config", "stories260K/generation",
                            f"checkpointer.checkpoint_files={files}", "max_new_tokens=1"])
        err = capsys.readouterr().err
        assert status == 1
        assert err.strip() == f"error: {expected}", err[-2000:]


def test_huge_max_filename_fails_at_the_first_missing_shard_at_once(tmp_path, tiny):
    # 0.6.1's dict form with a wrong max_filename used to build ten million names (2.45 GB)
    # before failing.
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 2, index=False)
    pattern = {"filename_format": "model-{}-of-{}.safetensors", "max_filename": "00002"}
    ckpt = FullModelHFCheckpointer(str(tmp_path), pattern, "LLAMA2", str(tmp_path / "out"))
    assert [os.path.basename(f) for f in ckpt._c.files] == names

    start = time.perf_counter()
    with pytest.raises(UserFileNotFoundError) as err:
        FullModelHFCheckpointer(
            str(tmp_path), dict(pattern, max_filename="10000000"), "LLAMA2", str(tmp_path / "out")
        )
    assert time.perf_counter() - start < 1.0
    assert str(err.value).startswith(
        f"checkpoint file {tmp_path}/model-00000001-of-10000000.safetensors not found (shard 1 "
        "of the 10000000 that checkpoint_files.filename_format 'model-{}-of-{}.safetensors' and "
        "max_filename '10000000' name); files in "
    )
    # The first shard is there: the second is the first missing.
    tiny.write_meta(tmp_path / "meta")
    os.rename(tmp_path / "meta" / "consolidated.00.pth", tmp_path / "meta" / "rank-0000001-of-9999999.pth")
    with pytest.raises(UserFileNotFoundError, match=r"meta/rank-0000002-of-9999999\.pth not found \(shard 2 of the 9999999 "):
        FullModelMetaCheckpointer(
            str(tmp_path / "meta"), {"filename_format": "rank-{}-of-{}.pth", "max_filename": "9999999"},
            "LLAMA2", str(tmp_path / "out"),
        )

    # Without a folder to check against, the expansion is capped.
    start = time.perf_counter()
    with pytest.raises(UserValueError, match=r"max_filename '10000000' names more than 100000 shards"):
        expand_checkpoint_files(dict(pattern, max_filename="10000000"))
    assert time.perf_counter() - start < 1.0


def test_config_json_nested_too_deep_is_one_line(tmp_path, tiny):
    # json's parser recursed past Python's limit: a RecursionError traceback.
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
    (tmp_path / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UserValueError, match=rf"^Could not parse config\.json {tmp_path}/config\.json: it nests arrays or objects too deeply to read$"):
        FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
