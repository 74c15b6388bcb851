"""A checkpoint is one unit: resuming pairs a recipe state only with its own save's files
(issue 14, item 2)."""

import json
import logging
import os

import pytest
import torch

from torchtune import UserValueError
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
    _io,
)


class Killed(BaseException):
    """Stands in for the process dying mid-save (not an Exception: nothing catches it)."""


def _die_before(monkeypatch, name):
    """Make the next write of a file called ``name`` kill the save, the files before it done."""
    real = {f: getattr(_io, f) for f in ("torch_save", "json_save")}

    def wrap(fn):
        def write(obj, final, *args, **kwargs):
            if os.path.basename(final) == name:
                raise Killed(final)
            return fn(obj, final, *args, **kwargs)
        return write

    for f, fn in real.items():
        monkeypatch.setattr(_io, f, wrap(fn))
    return lambda: [monkeypatch.setattr(_io, f, fn) for f, fn in real.items()]


def _scaled(model, factor):
    return {k: v * factor for k, v in model.items()}


def _meta_epochs(tmp_path, tiny, monkeypatch, die_before):
    """Epoch 0 saved completely, epoch 1 killed before ``die_before``; returns out."""
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]
    ckpt.save_checkpoint(dict(tiny.recipe_state(1), model=_scaled(model, 2)), epoch=0, intermediate_checkpoint=True)
    restore = _die_before(monkeypatch, die_before)
    with pytest.raises(Killed):
        ckpt.save_checkpoint(dict(tiny.recipe_state(2), model=_scaled(model, 3)), epoch=1,
                             intermediate_checkpoint=True)
    restore()
    return out, model


def _resume_meta(out, name):
    return FullModelMetaCheckpointer(str(out), [name], "LLAMA2", str(tmp_out(out)),
                                     recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)


def tmp_out(out):
    return out.parent / "resumed"


def test_interrupted_meta_save_is_not_resumed_with_the_old_recipe_state(tmp_path, tiny, monkeypatch):
    out, model = _meta_epochs(tmp_path, tiny, monkeypatch, die_before="recipe_state.pt")
    # The new model is on disk beside the previous save's recipe state (epochs_run=1):
    # resuming from the pair would train epoch 1 a second time.
    assert (out / "meta_model_1.pt").exists()
    assert torch.load(out / "recipe_state.pt", weights_only=True)["epochs_run"] == 1
    with pytest.raises(UserValueError) as err:
        _resume_meta(out, "meta_model_1.pt").load_checkpoint()
    msg = str(err.value)
    assert f"checkpoint file {out / 'meta_model_1.pt'} is not from the save that wrote {out / 'recipe_state.pt'}" in msg
    assert "\n" not in msg

    # The previous save itself is still whole and resumes.
    state = _resume_meta(out, "meta_model_0.pt").load_checkpoint()
    assert state["epochs_run"] == 1 and "checkpoint_save_id" not in state
    assert torch.equal(state["model"]["norm.scale"], model["norm.scale"] * 2)


def test_save_killed_between_recipe_state_and_manifest_resumes_the_new_save(tmp_path, tiny, monkeypatch):
    # The recipe state carries its own save's manifest: once it is renamed into place the
    # save is complete, whatever happens to the json copy written after it.
    out, model = _meta_epochs(tmp_path, tiny, monkeypatch, die_before="checkpoint_manifest.json")
    assert torch.load(out / "recipe_state.pt", weights_only=True)["epochs_run"] == 2
    assert json.loads((out / "checkpoint_manifest.json").read_text())["epoch"] == 0  # stale copy
    state = _resume_meta(out, "meta_model_1.pt").load_checkpoint()
    assert state["epochs_run"] == 2 and "checkpoint_manifest" not in state
    assert torch.equal(state["model"]["norm.scale"], model["norm.scale"] * 3)


def _kill_points(save):
    """The basenames of the files ``save()`` writes, in order (each a point to die before)."""
    names = []
    real = os.replace

    def record(a, b):
        names.append(os.path.basename(b))
        return real(a, b)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", record)
        save()
    return [n for n in dict.fromkeys(names) if not n.startswith(".")]


@pytest.mark.parametrize("kind", ["meta", "hf", "lora"])
def test_a_kill_at_any_point_of_an_epoch_save_leaves_a_save_that_resumes(tmp_path, tiny, monkeypatch, kind):
    """Die before each file an epoch-end save writes: the previous epoch, or the new one
    when its recipe state is in place, always resumes (issue 24, item 4)."""
    if kind == "hf":
        names, _, _ = tiny.write_hf(tmp_path / "in", "safetensors", 2, index=True)
        cls = FullModelHFCheckpointer
    else:
        tiny.write_meta(tmp_path / "in")
        names, cls = ["consolidated.00.pth"], FullModelMetaCheckpointer
    base = cls(str(tmp_path / "in"), names, "LLAMA2", str(tmp_path / "probe")).load_checkpoint()["model"]

    def state(epochs_run):
        extra = {"adapter": tiny.adapter(epochs_run)} if kind == "lora" else {}
        return dict(tiny.recipe_state(epochs_run), model=_scaled(base, epochs_run + 1), **extra)

    def run(out):
        ckpt = cls(str(tmp_path / "in"), names, "LLAMA2", str(out))
        ckpt.save_checkpoint(state(1), epoch=0, intermediate_checkpoint=True)
        return lambda: ckpt.save_checkpoint(state(2), epoch=1, intermediate_checkpoint=True)

    points = _kill_points(run(tmp_path / "dry"))
    assert "recipe_state.pt" in points and points[-1] == "checkpoint_manifest.json"
    for i, point in enumerate(points):
        out = tmp_path / f"out{i}"
        second_save = run(out)
        real = os.replace

        def dying(a, b, point=point):  # the file is written, not yet renamed into place
            if os.path.basename(b) == point:
                raise Killed(b)
            return real(a, b)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "replace", dying)
            with pytest.raises(Killed):
                second_save()
        epochs_run = torch.load(out / "recipe_state.pt", weights_only=True)["epochs_run"]
        epoch = epochs_run - 1
        if kind == "hf":
            files = [str(out / f"epoch_{epoch}" / n) for n in names]
        elif kind == "meta":
            files = [str(out / f"meta_model_{epoch}.pt")]
        else:
            files = [str(tmp_path / "in" / "consolidated.00.pth")]
        resumed = cls(str(out), files, "LLAMA2", str(tmp_path / f"next{i}"),
                      adapter_checkpoint=f"adapter_{epoch}.pt" if kind == "lora" else None,
                      recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True).load_checkpoint()
        assert resumed["epochs_run"] == epochs_run, point
        if kind == "lora":
            assert torch.equal(resumed["adapter"]["layers.0.attn.q_proj.lora_b.weight"],
                               tiny.adapter(epochs_run)["layers.0.attn.q_proj.lora_b.weight"])
        else:
            assert torch.equal(resumed["model"]["norm.scale"], base["norm.scale"] * (epochs_run + 1)), point
        # Before the recipe state's rename the previous epoch resumes; after it, the new one.
        assert epochs_run == (2 if points.index(point) > points.index("recipe_state.pt") else 1), point


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_interrupted_hf_epoch_save_and_normal_hf_resume(tmp_path, tiny, monkeypatch, fmt):
    names, _, _ = tiny.write_hf(tmp_path / "in", fmt, 2, index=True)
    out = tmp_path / "out"
    ckpt = FullModelHFCheckpointer(str(tmp_path / "in"), names, "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]
    ckpt.save_checkpoint(dict(tiny.recipe_state(1), model=_scaled(model, 2)), epoch=0, intermediate_checkpoint=True)

    def resume(epoch):  # the shipped configs' resume recipe
        return FullModelHFCheckpointer(str(out / f"epoch_{epoch}"), names, "LLAMA2", str(tmp_path / "next"),
                                       recipe_checkpoint="../recipe_state.pt", resume_from_checkpoint=True)

    state = resume(0).load_checkpoint()
    assert state["epochs_run"] == 1
    assert torch.equal(state["model"]["layers.1.attn.k_proj.weight"], model["layers.1.attn.k_proj.weight"] * 2)

    restore = _die_before(monkeypatch, "recipe_state.pt")
    with pytest.raises(Killed):
        ckpt.save_checkpoint(dict(tiny.recipe_state(2), model=_scaled(model, 3)), epoch=1, intermediate_checkpoint=True)
    restore()
    assert sorted(os.listdir(out / "epoch_1")) == sorted(os.listdir(out / "epoch_0"))  # complete model
    with pytest.raises(UserValueError, match=rf"checkpoint file {out / 'epoch_1' / names[0]} is not from the save that wrote {out / 'recipe_state.pt'}"):
        resume(1).load_checkpoint()
    assert resume(0).load_checkpoint()["epochs_run"] == 1


@pytest.mark.parametrize("fmt", ["hf", "meta"])
def test_step_folder_resume_checks_its_own_manifest(tmp_path, tiny, fmt):
    out = tmp_path / "out"
    if fmt == "hf":
        names, _, _ = tiny.write_hf(tmp_path / "in", "safetensors", 2, index=True)
        cls, files = FullModelHFCheckpointer, names
    else:
        tiny.write_meta(tmp_path / "in")
        cls, names, files = FullModelMetaCheckpointer, ["consolidated.00.pth"], ["meta_model_0.pt"]
    ckpt = cls(str(tmp_path / "in"), names, "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]
    for step in (10, 20):
        ckpt.save_checkpoint(dict(tiny.recipe_state(0, step), model=_scaled(model, step)), epoch=0,
                             step=step, intermediate_checkpoint=True)
    state = cls(str(out / "step_20"), files, "LLAMA2", str(tmp_path / "next"), recipe_checkpoint="recipe_state.pt",
                resume_from_checkpoint=True).load_checkpoint()
    assert state["steps_run"] == 20
    assert torch.equal(state["model"]["output.weight"], model["output.weight"] * 20)

    # step_10's model with step_20's recipe state: two saves mixed.
    mixed = cls(str(out / "step_10"), files, "LLAMA2", str(tmp_path / "next"),
                recipe_checkpoint=str(out / "step_20" / "recipe_state.pt"), resume_from_checkpoint=True)
    with pytest.raises(UserValueError, match=rf"{out / 'step_10'}/\S+ is not from the save that wrote {out / 'step_20' / 'recipe_state.pt'}"):
        mixed.load_checkpoint()


def test_manifest_lists_every_file_and_is_written_last(tmp_path, tiny, monkeypatch):
    from torchtune.training.checkpointing._manifest import fingerprint

    names, _, _ = tiny.write_hf(tmp_path / "in", "safetensors", 2, index=True)
    (tmp_path / "in" / ".tune_download.json").write_text(json.dumps({"repo_id": "org/m", "revision": "abc"}))
    out = tmp_path / "out"
    ckpt = FullModelHFCheckpointer(str(tmp_path / "in"), names, "LLAMA2", str(out))
    order = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(os.path.basename(b)), real_replace(a, b))[1])
    state = dict(tiny.recipe_state(1), model=ckpt.load_checkpoint()["model"], adapter=tiny.adapter(),
                 adapter_config={"lora_alpha": 4.0})
    ckpt.save_checkpoint(state, epoch=0, step=7, intermediate_checkpoint=True)
    step_dir = out / "step_7"
    manifest = json.loads((step_dir / "checkpoint_manifest.json").read_text())
    # The manifest is the last file written; only the step folder's rename comes after it.
    assert order[-2:] == ["checkpoint_manifest.json", "step_7"]

    on_disk = {os.path.relpath(os.path.join(r, f), step_dir) for r, _, fs in os.walk(step_dir) for f in fs}
    assert set(manifest["files"]) == on_disk - {"checkpoint_manifest.json"}
    for rel, fp in manifest["files"].items():
        assert fp == fingerprint(str(step_dir / rel)), rel
    assert sorted(manifest["model_files"]) == sorted(names)
    assert (manifest["adapter"], manifest["recipe_state"]) == ("adapter_0.pt", "recipe_state.pt")
    assert (manifest["epoch"], manifest["step"]) == (0, 7)
    recipe_state = torch.load(step_dir / "recipe_state.pt", weights_only=True)
    assert recipe_state["checkpoint_save_id"] == manifest["save_id"]
    assert len(manifest["run_id"]) == 32 and manifest["run_id"] != manifest["save_id"]


def test_fingerprint_samples_big_files(tmp_path):
    from torchtune.training.checkpointing._manifest import fingerprint

    path = tmp_path / "big.bin"
    size = 8 << 20
    data = bytearray(os.urandom(size))
    path.write_bytes(data)
    first = fingerprint(str(path))
    assert first["size"] == size

    def changed_at(offset):
        edited = bytearray(data)
        edited[offset] ^= 0xFF
        path.write_bytes(edited)
        return fingerprint(str(path)) != first

    assert changed_at(0) and changed_at(size - 1)  # first and last MiB
    assert changed_at(1 << 20)  # the first sampled 64 KiB block
    # Only about 3 MiB are read: a byte outside every sample goes unnoticed (by design).
    assert not changed_at((1 << 20) + (1 << 16) + 5)
    path.write_bytes(bytes(data[:-1]))
    assert fingerprint(str(path)) != first  # and the size is part of it


def test_model_file_changed_after_its_save_is_refused(tmp_path, tiny):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    out = tmp_path / "out"
    run = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    model = run.load_checkpoint()["model"]
    run.save_checkpoint(dict(tiny.recipe_state(1), model=model), epoch=0, intermediate_checkpoint=True)
    # Another run, writing into the same output_dir without resuming, replaces the model.
    other = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    other.save_checkpoint({"model": _scaled(model, 5)}, epoch=0)
    with pytest.raises(UserValueError, match=rf"{out / 'torchtune_model_0.pt'} has changed since the save that wrote {out / 'recipe_state.pt'}"):
        FullModelTorchTuneCheckpointer(str(out), ["torchtune_model_0.pt"], "LLAMA2", str(tmp_path / "next"),
                                       recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True).load_checkpoint()


def test_recipe_state_with_save_id_and_no_embedded_manifest_needs_the_json_one(tmp_path, tiny):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    out = tmp_path / "out"
    run = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    run.save_checkpoint(dict(tiny.recipe_state(1), model=tiny.tune_sd()), epoch=0, intermediate_checkpoint=True)

    def resume():
        return FullModelTorchTuneCheckpointer(str(out), ["torchtune_model_0.pt"], "LLAMA2", str(tmp_path / "next"),
                                              recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)

    os.remove(out / "checkpoint_manifest.json")
    assert resume().load_checkpoint()["epochs_run"] == 1  # the recipe state carries its manifest
    # The format of the previous release: the save id alone, the manifest only beside it.
    state = torch.load(out / "recipe_state.pt", weights_only=True)
    del state["checkpoint_manifest"]
    torch.save(state, out / "recipe_state.pt")
    with pytest.raises(UserValueError, match=rf"{out / 'recipe_state.pt'} was written by save \w+ but {out / 'checkpoint_manifest.json'} is missing"):
        resume().load_checkpoint()


def test_recipe_state_from_before_manifests_loads_with_a_warning(tmp_path, tiny, caplog):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    torch.save(tiny.recipe_state(1), tmp_path / "recipe_state.pt")  # the older format: no save id
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(tmp_path / "out"),
                                          recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)
    with caplog.at_level(logging.WARNING):
        assert ckpt.load_checkpoint()["epochs_run"] == 1
    assert "recipe_state.pt has no checkpoint_save_id" in caplog.text


def _lora_epochs(tmp_path, tiny, monkeypatch):
    """LoRA: epoch 0 saved completely; epoch 1 killed after its adapter was written."""
    tiny.write_meta(tmp_path / "base")
    base = str(tmp_path / "base" / "consolidated.00.pth")
    out = tmp_path / "out"
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "base"), ["consolidated.00.pth"], "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]
    ckpt.save_checkpoint(dict(tiny.recipe_state(1), model=model, adapter=tiny.adapter(0)), epoch=0,
                         intermediate_checkpoint=True)
    restore = _die_before(monkeypatch, "recipe_state.pt")
    with pytest.raises(Killed):
        ckpt.save_checkpoint(dict(tiny.recipe_state(2), model=model, adapter=tiny.adapter(1)), epoch=1,
                             intermediate_checkpoint=True)
    restore()
    return out, base


def test_lora_resume_checks_the_adapter(tmp_path, tiny, monkeypatch):
    out, base = _lora_epochs(tmp_path, tiny, monkeypatch)

    def resume(files, adapter):
        return FullModelMetaCheckpointer(str(out), files, "LLAMA2", str(tmp_path / "next"), adapter_checkpoint=adapter,
                                         recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)

    state = resume([base], "adapter_0.pt").load_checkpoint()  # the base model is not in the manifest
    assert state["epochs_run"] == 1
    assert torch.equal(state["adapter"]["layers.0.attn.q_proj.lora_b.weight"],
                       tiny.adapter(0)["layers.0.attn.q_proj.lora_b.weight"])
    with pytest.raises(UserValueError, match=rf"adapter_checkpoint {out / 'adapter_1.pt'} is not the adapter of the save that wrote {out / 'recipe_state.pt'}"):
        resume([base], "adapter_1.pt").load_checkpoint()
    with pytest.raises(UserValueError, match=r"is a LoRA save: set checkpointer\.adapter_checkpoint to its adapter .*adapter_0\.pt"):
        resume([base], None).load_checkpoint()
    with pytest.raises(UserValueError, match=r"meta_model_0\.pt is the merged model .* would apply the adapter twice"):
        resume(["meta_model_0.pt"], "adapter_0.pt").load_checkpoint()


def test_malformed_manifest_fails_when_the_checkpointer_is_built(tmp_path, tiny):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    out = tmp_path / "out"
    run = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    run.save_checkpoint(dict(tiny.recipe_state(1), model=tiny.tune_sd()), epoch=0, intermediate_checkpoint=True)
    state = torch.load(out / "recipe_state.pt", weights_only=True)
    state["checkpoint_manifest"]["model_files"] = ["elsewhere.pt"]
    torch.save(state, out / "recipe_state.pt")
    with pytest.raises(UserValueError, match=rf"The checkpoint_manifest in {out / 'recipe_state.pt'} is malformed: 'model_files'"):
        FullModelTorchTuneCheckpointer(str(out), ["torchtune_model_0.pt"], "LLAMA2", str(tmp_path / "next"),
                                       recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_without_recipe_checkpoint_takes_the_newest_save(tmp_path, tiny, lora):
    """torchtune 0.6.1's form: resume_from_checkpoint alone finds the files itself."""
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    model = ckpt.load_checkpoint()["model"]

    def save(epoch, step, factor):
        extra = {"adapter": tiny.adapter(factor)} if lora else {}
        ckpt.save_checkpoint(dict(tiny.recipe_state(epoch + (step is None), step or 0), model=_scaled(model, factor),
                                  **extra), epoch=epoch, step=step, intermediate_checkpoint=True)

    save(0, 2, 2)
    save(0, None, 3)  # the end of epoch 0 comes after its step saves
    save(1, 6, 4)     # and before the step saves of epoch 1: the newest
    resumed = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out),
                                        resume_from_checkpoint=True)
    state = resumed.load_checkpoint()
    assert state["steps_run"] == 6
    if lora:  # the base model stays; the adapter is the save's
        assert torch.equal(state["model"]["norm.scale"], model["norm.scale"])
        assert torch.equal(state["adapter"]["layers.0.attn.q_proj.lora_b.weight"],
                           tiny.adapter(4)["layers.0.attn.q_proj.lora_b.weight"])
    else:
        assert torch.equal(state["model"]["norm.scale"], model["norm.scale"] * 4)

    empty = tmp_path / "empty"
    with pytest.raises(UserValueError, match=rf"recipe_checkpoint is not set and output_dir {empty} holds no recipe_state.pt"):
        FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(empty),
                                  resume_from_checkpoint=True)
