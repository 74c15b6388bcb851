"""SIGKILL a real process mid-save: the previous checkpoint stays complete and loadable."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from torchtune.training.checkpointing import FullModelHFCheckpointer, FullModelMetaCheckpointer

# Big enough (about 34 MB per save) that a save takes a while; embeddings carry the bulk.
BIG_VOCAB = 1 << 17

_CHILD = r"""
import sys, torch
from torchtune.training.checkpointing import FullModelHFCheckpointer, FullModelMetaCheckpointer
fmt, src, out, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
cls = FullModelHFCheckpointer if fmt == "hf" else FullModelMetaCheckpointer
ckpt = cls(src, files, "LLAMA2", out)
model = ckpt.load_checkpoint()["model"]
version = 0
while True:  # save the same epoch over and over until killed
    filled = {k: torch.full_like(v, float(version)) for k, v in model.items()}
    ckpt.save_checkpoint({"model": filled, "version": version}, epoch=0, intermediate_checkpoint=True)
    print(version, flush=True)
    version += 1
"""


def _big(sd):
    g = torch.Generator().manual_seed(0)
    sd["tok_embeddings.weight"] = torch.randn(BIG_VOCAB, sd["tok_embeddings.weight"].shape[1], generator=g)
    sd["output.weight"] = torch.randn(BIG_VOCAB, sd["output.weight"].shape[1], generator=g)
    return sd


def _write_input(tmp_path, tiny, fmt):
    from safetensors.torch import save_file

    from torchtune.models.llama2._convert_weights import tune_to_hf, tune_to_meta

    src = tmp_path / "in"
    src.mkdir()
    sd = _big(tiny.tune_sd())
    if fmt == "meta":
        torch.save(tune_to_meta(sd), src / "consolidated.00.pth")
        (src / "params.json").write_text(json.dumps({"dim": tiny.cfg.dim, "n_heads": tiny.cfg.n_h}))
        return src, ["consolidated.00.pth"]
    hf = tune_to_hf(sd, tiny.cfg.n_h, tiny.cfg.n_kv, tiny.cfg.dim)
    keys = sorted(hf)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save_file({k: hf[k] for k in keys[:10]}, str(src / names[0]), metadata={"format": "pt"})
    save_file({k: hf[k] for k in keys[10:]}, str(src / names[1]), metadata={"format": "pt"})
    weight_map = {k: names[0] if i < 10 else names[1] for i, k in enumerate(keys)}
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (src / "config.json").write_text(json.dumps(dict(tiny.hf_config(), vocab_size=BIG_VOCAB)))
    return src, names


def _check_every_final_file_is_complete(root):
    """Every file under a non-hidden name (outside hidden temporaries) reads completely."""
    checked = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            if name.endswith(".safetensors"):
                with safe_open(path, "pt") as f:
                    [f.get_tensor(k) for k in f.keys()]
            elif name.endswith(".json"):
                json.loads(open(path).read())
            else:
                torch.load(path, weights_only=True)
            checked += 1
    return checked


def _uniform_value(sd):
    values = {float(v.flatten()[0]) for v in sd.values()} | {float(v.flatten()[-1]) for v in sd.values()}
    assert len(values) == 1, f"tensors from different saves mixed: {sorted(values)}"
    return values.pop()


@pytest.mark.parametrize("fmt", ["meta", "hf"])
def test_sigkill_mid_save_leaves_previous_checkpoint_complete(tmp_path, tiny, fmt):
    src, files = _write_input(tmp_path, tiny, fmt)
    out = tmp_path / "out"
    # The model's own temporary: a file for Meta, the epoch folder for HF.
    marker = ".meta_model_0.pt.tmp-torchtune-" if fmt == "meta" else ".epoch_0.tmp-torchtune-"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, fmt, str(src), str(out), ",".join(files)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "0", "first save did not complete"
        deadline = time.monotonic() + 60
        while not any(n.startswith(marker) for n in os.listdir(out)):
            assert time.monotonic() < deadline and proc.poll() is None, "second save never started"
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Killed mid-write: the partial save is still there, under a hidden temporary name.
    assert any(n.startswith(marker) for n in os.listdir(out)), os.listdir(out)

    assert _check_every_final_file_is_complete(out) >= 2
    if fmt == "meta":
        ckpt = FullModelMetaCheckpointer(str(out), ["meta_model_0.pt"], "LLAMA2", str(out),
                                         recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)
    else:
        ckpt = FullModelHFCheckpointer(str(out / "epoch_0"), files, "LLAMA2", str(out),
                                       recipe_checkpoint=str(out / "recipe_state.pt"),
                                       resume_from_checkpoint=True)
    state = ckpt.load_checkpoint()
    # The model and recipe state on disk come from the same, complete, save.
    assert _uniform_value(state["model"]) == state["version"]
    assert state["model"]["tok_embeddings.weight"].shape == (BIG_VOCAB, tiny.cfg.dim)

    # The next save clears the dead process's temporaries (epoch 1: epoch 0 is this run's input).
    ckpt.save_checkpoint({"model": state["model"], "version": -1}, epoch=1, intermediate_checkpoint=True)
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_folder_replace_fallback_and_recovery(tmp_path, monkeypatch):
    from torchtune.training.checkpointing import _io

    dead = 2**22 + 4321  # above pid_max on default kernels: never a live process
    final = tmp_path / "epoch_0"
    for version, exchange in ((1, True), (2, False)):  # renameat2 swap, then the fallback
        monkeypatch.setattr(_io, "_exchange", _io._exchange if exchange else (lambda a, b: False))
        with _io.atomic_dir(str(final)) as tmp:
            (tmp_path / tmp / "w.json").write_text(json.dumps(version))
        assert json.loads((final / "w.json").read_text()) == version
        assert sorted(os.listdir(tmp_path)) == ["epoch_0"]

    # A process that died between the fallback's two renames left only the hidden old copy:
    # the next save puts it back. A half-deleted pruned step folder is simply removed.
    os.replace(final, tmp_path / f".epoch_0.old-torchtune-{dead}-abcd1234")
    (tmp_path / f".step_3.del-torchtune-{dead}-abcd1234").mkdir()
    _io.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["epoch_0"]
    assert json.loads((final / "w.json").read_text()) == 2


def test_saved_files_get_ordinary_permissions(tmp_path):
    """Every writer goes through the same atomic path, whatever mode its library creates
    files with (safetensors makes them owner-only)."""
    from torchtune.training.checkpointing import _io

    old = os.umask(0o022)
    try:
        _io.safetensors_save({"w": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
        _io.torch_save({"w": torch.zeros(2)}, str(tmp_path / "b.pt"))
        _io.json_save({"a": 1}, str(tmp_path / "c.json"))
    finally:
        os.umask(old)
    for name in ("a.safetensors", "b.pt", "c.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
