"""A run never overwrites the checkpoint it is fine-tuning (issue 14, item 1)."""

import hashlib
import os

import pytest
import torch

from torchtune import UserValueError
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)


def _digest(folder):
    """Content hash of every file under ``folder`` (to show an input was not touched)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def _hf_run_with_epoch_0(tmp_path, tiny):
    """An HF run that saved epoch 0 into ``out``: (out, shard names)."""
    names, _, _ = tiny.write_hf(tmp_path / "in", "safetensors", 2, index=True)
    out = tmp_path / "out"
    ckpt = FullModelHFCheckpointer(str(tmp_path / "in"), names, "LLAMA2", str(out))
    ckpt.save_checkpoint(dict(tiny.recipe_state(1), model=ckpt.load_checkpoint()["model"]),
                         epoch=0, intermediate_checkpoint=True)
    return out, names


def test_configs_resume_recipe_without_resume_flag_is_refused(tmp_path, tiny):
    # The shipped configs' resume recipe, with resume_from_checkpoint forgotten: the first
    # epoch-end save would replace out/epoch_0, the folder being fine-tuned.
    out, names = _hf_run_with_epoch_0(tmp_path, tiny)
    before = _digest(out)
    with pytest.raises(UserValueError) as err:
        FullModelHFCheckpointer(str(out / "epoch_0"), names, "LLAMA2", str(out),
                                recipe_checkpoint="../recipe_state.pt")
    msg = str(err.value)
    assert f"saving to output_dir {out} replaces {out / 'epoch_0'}, which holds checkpoint file {out / 'epoch_0' / names[0]};" in msg
    assert "set resume_from_checkpoint=True to resume from it, or choose another output_dir" in msg
    assert "\n" not in msg
    assert _digest(out) == before

    # With the flag it is the documented workflow.
    FullModelHFCheckpointer(str(out / "epoch_0"), names, "LLAMA2", str(out),
                            recipe_checkpoint="../recipe_state.pt", resume_from_checkpoint=True)


def test_symlinks_are_resolved(tmp_path, tiny):
    out, names = _hf_run_with_epoch_0(tmp_path, tiny)
    (tmp_path / "linked_model").symlink_to(out / "epoch_0")  # checkpoint_dir via a symlink
    with pytest.raises(UserValueError, match=r"linked_model/model-00001-of-00002\.safetensors \(really .*out/epoch_0/"):
        FullModelHFCheckpointer(str(tmp_path / "linked_model"), names, "LLAMA2", str(out))
    (tmp_path / "linked_out").symlink_to(out)  # output_dir via a symlink
    with pytest.raises(UserValueError, match=r"would overwrite its own input"):
        FullModelHFCheckpointer(str(out / "epoch_0"), names, "LLAMA2", str(tmp_path / "linked_out"))


@pytest.mark.parametrize("cls,name", [
    (FullModelMetaCheckpointer, "meta_model_0.pt"),
    (FullModelTorchTuneCheckpointer, "torchtune_model_3.pt"),
    (FullModelTorchTuneCheckpointer, os.path.join("step_20", "torchtune_model_0.pt")),
    (FullModelMetaCheckpointer, os.path.join("adapter_1_peft", "meta_model_0.pt")),
])
def test_inputs_at_names_a_save_writes_are_refused(tmp_path, tiny, cls, name):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny.tune_sd() if cls is FullModelTorchTuneCheckpointer else {}, path)
    with pytest.raises(UserValueError, match=rf"output_dir {tmp_path} replaces {tmp_path}/\S+, which (is|holds) checkpoint file {path};"):
        cls(str(tmp_path), [name], "LLAMA2", str(tmp_path))


@pytest.mark.parametrize("cls,name", [
    (FullModelMetaCheckpointer, "consolidated.00.pth"),  # the seed Meta config: output_dir == checkpoint_dir
    (FullModelTorchTuneCheckpointer, "meta_model_0.pt"),  # this checkpointer writes torchtune_model_N.pt
    (FullModelMetaCheckpointer, "meta_model_01.pt"),  # never written: saves format epochs as plain ints
    (FullModelTorchTuneCheckpointer, os.path.join("step_01", "torchtune_model_0.pt")),
])
def test_inputs_no_save_touches_are_fine(tmp_path, tiny, cls, name):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny.tune_sd(), path)
    cls(str(tmp_path), [name], "LLAMA2", str(tmp_path))


def test_resumed_save_never_replaces_an_input_folder(tmp_path, tiny):
    out, names = _hf_run_with_epoch_0(tmp_path, tiny)
    resumed = FullModelHFCheckpointer(str(out / "epoch_0"), names, "LLAMA2", str(out),
                                      recipe_checkpoint="../recipe_state.pt", resume_from_checkpoint=True)
    state = resumed.load_checkpoint()
    before = _digest(out / "epoch_0")
    with pytest.raises(UserValueError, match=rf"writing {out / 'epoch_0'} would replace {out / 'epoch_0' / names[0]}"):
        resumed.save_checkpoint(state, epoch=0, intermediate_checkpoint=True)
    assert _digest(out / "epoch_0") == before
    assert sorted(os.listdir(out)) == ["checkpoint_manifest.json", "epoch_0", "recipe_state.pt"]

    # The next epoch is what a resumed run writes; replacing the recipe state it resumed
    # from is how it records progress.
    resumed.save_checkpoint(dict(state, epochs_run=2), epoch=1, intermediate_checkpoint=True)
    assert torch.load(out / "recipe_state.pt", weights_only=True)["epochs_run"] == 2
    assert _digest(out / "epoch_0") == before


def test_resumed_save_never_replaces_an_input_file(tmp_path, tiny):
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    base = str(tmp_path / "in" / "consolidated.00.pth")
    first = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    model = first.load_checkpoint()["model"]
    first.save_checkpoint(dict(tiny.recipe_state(0, 5), model=model), epoch=0, step=5,
                          intermediate_checkpoint=True)
    first.save_checkpoint(dict(tiny.recipe_state(1), model=model), epoch=0, intermediate_checkpoint=True)

    full = FullModelMetaCheckpointer(str(out), ["meta_model_0.pt"], "LLAMA2", str(out),
                                     recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)
    with pytest.raises(UserValueError, match=rf"writing {out / 'meta_model_0.pt'} would replace"):
        full.save_checkpoint(full.load_checkpoint(), epoch=0)

    lora_out = tmp_path / "lora"
    FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(lora_out)).save_checkpoint(
        dict(tiny.recipe_state(1), adapter=tiny.adapter()), epoch=0, intermediate_checkpoint=True, adapter_only=True)
    lora = FullModelMetaCheckpointer(str(lora_out), [base], "LLAMA2", str(lora_out), adapter_checkpoint="adapter_0.pt",
                                     recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)
    state = lora.load_checkpoint()
    with pytest.raises(UserValueError, match=rf"writing {lora_out / 'adapter_0.pt'} would replace"):
        lora.save_checkpoint(state, epoch=0, adapter_only=True)

    step = FullModelMetaCheckpointer(str(out / "step_5"), ["meta_model_0.pt"], "LLAMA2", str(out),
                                     recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)
    with pytest.raises(UserValueError, match=rf"writing {out / 'step_5'} would replace"):
        step.save_checkpoint(step.load_checkpoint(), epoch=0, step=5, intermediate_checkpoint=True)
    assert torch.load(out / "step_5" / "recipe_state.pt", weights_only=True)["steps_run"] == 5
