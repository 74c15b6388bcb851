"""A full disk or a refused write is a one-line UserOSError naming the file; the previous
checkpoint stays whole and no temporary is left (issue 14, item 11)."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from torchtune import UserOSError, UserValueError
from torchtune.training.checkpointing import FullModelHFCheckpointer, FullModelMetaCheckpointer


def _listing(folder):
    return sorted(os.listdir(folder))


def test_disk_full_in_torch_save_keeps_the_previous_file(tmp_path, tiny, monkeypatch):
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    state = dict(tiny.recipe_state(1), model=ckpt.load_checkpoint()["model"])
    ckpt.save_checkpoint(state, epoch=0, intermediate_checkpoint=True)
    before = {n: (out / n).read_bytes() for n in _listing(out)}

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserOSError) as err:
        ckpt.save_checkpoint(dict(state, epochs_run=2), epoch=0, intermediate_checkpoint=True)
    msg = str(err.value)
    assert msg.startswith(f"No space left on device while writing {out / 'meta_model_0.pt'}: free space in {out}")
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError) and "\n" not in msg
    assert {n: (out / n).read_bytes() for n in _listing(out)} == before  # no temporary, nothing changed


def test_disk_full_in_safetensors_keeps_the_previous_epoch_folder(tmp_path, tiny, monkeypatch):
    from safetensors import SafetensorError

    names, _, _ = tiny.write_hf(tmp_path / "in", "safetensors", 2, index=True)
    out = tmp_path / "out"
    ckpt = FullModelHFCheckpointer(str(tmp_path / "in"), names, "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]
    ckpt.save_checkpoint({"model": model}, epoch=0)
    before = {n: (out / "epoch_0" / n).read_bytes() for n in _listing(out / "epoch_0")}

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x08\x00 half a shard")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(UserOSError) as err:
        ckpt.save_checkpoint({"model": {k: v * 2 for k, v in model.items()}}, epoch=0)
    # The file is named as the user will look for it, not by its temporary folder.
    assert f"No space left on device while writing {out / 'epoch_0' / names[0]}:" in str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert _listing(out) == ["epoch_0"]
    assert {n: (out / "epoch_0" / n).read_bytes() for n in _listing(out / "epoch_0")} == before


def test_permission_denied_names_the_file(tmp_path, tiny, monkeypatch):
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]

    def refused(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", dst)

    monkeypatch.setattr("shutil.copyfile", refused)
    with pytest.raises(UserOSError, match=rf"^Permission denied writing {out / 'params.json'} \(Permission denied\): make {out} writable"):
        ckpt.save_checkpoint({"model": model}, epoch=0)
    assert _listing(out) == ["meta_model_0.pt"]  # written before the copy failed; no temporaries


def test_output_dir_that_cannot_be_created(tmp_path, tiny):
    tiny.write_meta(tmp_path / "in")
    (tmp_path / "a_file").write_text("")
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2",
                                     str(tmp_path / "a_file" / "out"))
    with pytest.raises(UserOSError, match=r"Could not write .*a_file/out: Not a directory"):
        ckpt.save_checkpoint(ckpt.load_checkpoint(), epoch=0)


_FILE_SIZE_LIMIT_CHILD = textwrap.dedent(r"""
    import json, resource, sys
    from torchtune.training.checkpointing import FullModelMetaCheckpointer
    src, out = sys.argv[1], sys.argv[2]
    ckpt = FullModelMetaCheckpointer(src, ["consolidated.00.pth"], "LLAMA2", out)
    model = ckpt.load_checkpoint()["model"]
    # Python ignores SIGXFSZ, so writing past the limit fails with EFBIG like a full disk would.
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))
    try:
        ckpt.save_checkpoint({"model": model}, epoch=0)
    except Exception as err:
        print(json.dumps([type(err).__name__, getattr(err, "errno", None), str(err)]))
""")


def test_real_write_failure_inside_torch_save_keeps_its_errno(tmp_path, tiny):
    # torch.save reports a failed write as a RuntimeError ("unexpected pos"); the errno must
    # survive so the user reads what happened, not a torch internal.
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT_CHILD, str(tmp_path / "in"), str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, code, msg = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (name, code) == ("UserOSError", errno.EFBIG)
    assert msg == f"Could not write {out / 'meta_model_0.pt'}: File too large"
    assert _listing(out) == []


def test_truncated_recipe_state_and_adapter_are_named(tmp_path, tiny):
    tiny.write_meta(tmp_path)
    torch.save({"epochs_run": 1}, tmp_path / "recipe_state.pt")
    torch.save(tiny.adapter(), tmp_path / "adapter_0.pt")
    for name in ("recipe_state.pt", "adapter_0.pt"):
        good = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(good[: len(good) // 2])
        with pytest.raises(UserValueError, match=rf"Could not read \w+ checkpoint {tmp_path / name}: the file is truncated or corrupt"):
            # The recipe state is read when the checkpointer is built, the adapter at load.
            FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path / "out"),
                                      adapter_checkpoint="adapter_0.pt", recipe_checkpoint="recipe_state.pt",
                                      resume_from_checkpoint=True).load_checkpoint()
        (tmp_path / name).write_bytes(good)
