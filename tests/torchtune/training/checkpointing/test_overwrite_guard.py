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


# Issue 24, items 5 and 6: every file a run reads is guarded, not only checkpoint files.


def test_input_files_in_config_names_tokenizer_data_and_folders_inside_output(tmp_path):
    from omegaconf import OmegaConf

    from torchtune.training.checkpointing import input_files_in_config

    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "a.jsonl").write_text("{}\n")
    (out / "tok.model").write_text("x")
    (tmp_path / "train.txt").write_text("x")
    cfg = OmegaConf.create({
        "output_dir": str(out),
        "tokenizer": {"path": "${output_dir}/tok.model"},
        "dataset": {"data_files": [str(tmp_path / "train.txt"), "not/a/file"], "source": "${output_dir}/data"},
        "checkpointer": {"checkpoint_dir": str(out), "recipe_checkpoint": str(out / "tok.model")},
    })
    found = input_files_in_config(cfg, str(out))
    assert sorted(found) == sorted([str(out / "tok.model"), str(tmp_path / "train.txt"), str(out / "data" / "a.jsonl")])


def test_tokenizer_in_output_dir_is_not_replaced_by_a_meta_save(tmp_path, tiny):
    # The checkpoint folder carries one tokenizer.model; the run reads another one, kept in
    # output_dir: every Meta save writes output_dir/tokenizer.model as the checkpoint's copy.
    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.model").write_bytes(b"the tokenizer this run reads")
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    with pytest.raises(UserValueError) as err:
        ckpt.protect_inputs([str(out / "tokenizer.model")])
    msg = str(err.value)
    assert (f"each save writes {out / 'tokenizer.model'} (a copy of {tmp_path / 'in' / 'tokenizer.model'}), "
            f"which is {out / 'tokenizer.model'}, a file this run reads") in msg
    assert (out / "tokenizer.model").read_bytes() == b"the tokenizer this run reads"

    # The same bytes (a run resumed from its own output, a copied folder) are not a conflict.
    (out / "tokenizer.model").write_bytes((tmp_path / "in" / "tokenizer.model").read_bytes())
    ckpt.protect_inputs([str(out / "tokenizer.model")])
    ckpt.save_checkpoint({"model": ckpt.load_checkpoint()["model"]}, epoch=0)
    assert (out / "meta_model_0.pt").exists()


def test_data_file_in_a_step_folder_is_guarded(tmp_path, tiny):
    # Data kept in output_dir/step_8/: a save at step 8 replaces that folder whole.
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    out = tmp_path / "out"
    first = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    first.save_checkpoint(dict(tiny.recipe_state(0, 4), model=tiny.tune_sd()), epoch=0, step=4,
                          intermediate_checkpoint=True)
    data = out / "step_8" / "notes.txt"
    data.parent.mkdir()
    data.write_text("mine")
    fresh = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    with pytest.raises(UserValueError, match=rf"replaces {out / 'step_8'}, which holds input file {data}"):
        fresh.protect_inputs([str(data)])  # refused before training
    # A resumed run is allowed its own output, so the check moves to the save itself.
    run = FullModelTorchTuneCheckpointer(str(out / "step_4"), ["torchtune_model_0.pt"], "LLAMA2", str(out),
                                         recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)
    run.protect_inputs([str(data)])
    with pytest.raises(UserValueError, match=rf"writing {out / 'step_8'} would replace {data}, which this run read"):
        run.save_checkpoint(dict(tiny.recipe_state(0, 8), model=tiny.tune_sd()), epoch=0, step=8,
                            intermediate_checkpoint=True)
    assert data.read_text() == "mine"


def test_reference_checkpoint_is_guarded_against_the_policys_saves(tmp_path, tiny):
    # Full DPO: the reference model is read from the policy's output (an earlier SFT run's
    # epoch_0); the policy's first epoch save would replace that folder.
    out, names = _hf_run_with_epoch_0(tmp_path, tiny)
    before = _digest(out / "epoch_0")
    policy = FullModelHFCheckpointer(str(tmp_path / "in"), names, "LLAMA2", str(out))
    ref = FullModelHFCheckpointer(str(out / "epoch_0"), names, "LLAMA2", str(tmp_path / "ref_unused"))
    assert sorted(ref.input_files) == sorted(str(out / "epoch_0" / n) for n in names)
    with pytest.raises(UserValueError) as err:
        policy.protect_inputs(ref.input_files)  # what full_dpo_distributed does
    assert f"replaces {out / 'epoch_0'}, which holds input file {out / 'epoch_0' / names[0]}" in str(err.value)
    assert _digest(out / "epoch_0") == before


def test_a_new_run_into_a_finished_runs_folder_says_what_it_replaces(tmp_path, tiny, caplog):
    import logging

    tiny.write_meta(tmp_path / "in")
    out = tmp_path / "out"
    first = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    first.save_checkpoint({"model": first.load_checkpoint()["model"], "adapter": tiny.adapter()}, epoch=0)
    with caplog.at_level(logging.WARNING):
        FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(out))
    assert (f"output_dir {out} holds checkpoints of an earlier run (adapter_0.pt, meta_model_0.pt): this "
            "run's saves replace those of the same names") in caplog.text
