"""Intermediate saves, step folders with pruning, adapters, and resuming from what was saved."""

import os

import pytest
import torch

from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)


def _recipe_state(epochs_run, steps_run=0):
    return {
        "seed": 7,
        "epochs_run": epochs_run,
        "total_epochs": 3,
        "max_steps_per_epoch": None,
        "steps_run": steps_run,
        "optimizer": {"state": {0: {"exp_avg": torch.arange(4.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "lr_scheduler": {"last_epoch": steps_run},
        "rng_state": {"torch": torch.get_rng_state(), "python": (3, (1, 2, 3), None)},
    }


def _adapter(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "layers.0.attn.q_proj.lora_a.weight": torch.randn(2, 32, generator=g),
        "layers.0.attn.q_proj.lora_b.weight": torch.randn(32, 2, generator=g),
    }


def _assert_state_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_state_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_state_equal(x, y)
    else:
        assert a == b


def test_seed_lora_config_resumes_with_recipe_state_and_adapter(tmp_path, tiny):
    # The seed's LoRA config block: output_dir == checkpoint_dir, relative adapter/recipe names.
    names, _, _ = tiny.write_hf(tmp_path, "bin", 2, index=True)
    first = FullModelHFCheckpointer(
        checkpoint_dir=str(tmp_path),
        checkpoint_files=names,
        model_type="LLAMA2",
        output_dir=str(tmp_path),
    )
    loaded = first.load_checkpoint()
    state = dict(_recipe_state(epochs_run=1), model=loaded["model"], adapter=_adapter())
    first.save_checkpoint(state, epoch=0, intermediate_checkpoint=True)
    assert sorted(os.listdir(tmp_path / "epoch_0")) == sorted(
        names + ["pytorch_model.bin.index.json", "config.json", "tokenizer_config.json"]
    )
    saved = torch.load(tmp_path / "recipe_state.pt", weights_only=True)
    assert "model" not in saved and "adapter" not in saved

    resumed = FullModelHFCheckpointer(
        checkpoint_dir=str(tmp_path),
        checkpoint_files=names,  # still the base model: the adapter holds the training
        adapter_checkpoint="adapter_0.pt",
        recipe_checkpoint="recipe_state.pt",
        output_dir=str(tmp_path),
        model_type="LLAMA2",
        resume_from_checkpoint=True,
    ).load_checkpoint()
    _assert_state_equal({k: v for k, v in resumed.items() if k != "model"},
                        dict(_recipe_state(epochs_run=1), adapter=_adapter()))
    _assert_state_equal(resumed["model"], loaded["model"])


def test_adapter_is_not_loaded_when_not_resuming(tmp_path, tiny):
    tiny.write_meta(tmp_path)
    ckpt = FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path),
                                     adapter_checkpoint="adapter_0.pt", recipe_checkpoint="recipe_state.pt")
    assert set(ckpt.load_checkpoint()) == {"model"}  # neither file exists yet: not read


def test_adapter_only_and_end_of_training_writes(tmp_path, tiny):
    tiny.write_meta(tmp_path / "in")
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), ["consolidated.00.pth"], "LLAMA2", str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    ckpt.save_checkpoint(dict(_recipe_state(1), model=model, adapter=_adapter()), epoch=0,
                         intermediate_checkpoint=True, adapter_only=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["adapter_0.pt", "checkpoint_manifest.json", "recipe_state.pt"]
    _assert_state_equal(torch.load(tmp_path / "out" / "adapter_0.pt", weights_only=True), _adapter())

    ckpt.save_checkpoint({"model": model, "adapter": _adapter(1)}, epoch=1)
    assert sorted(os.listdir(tmp_path / "out")) == [
        "adapter_0.pt", "adapter_1.pt", "checkpoint_manifest.json", "meta_model_1.pt", "params.json",
        "recipe_state.pt", "tokenizer.model",
    ]
    # The end-of-training save leaves the previous recipe state (and its manifest) alone.
    assert torch.load(tmp_path / "out" / "recipe_state.pt", weights_only=True)["epochs_run"] == 1


@pytest.mark.parametrize("fmt", ["hf", "meta"])
def test_step_checkpoints_are_pruned_and_resume_mid_epoch(tmp_path, tiny, fmt):
    out = tmp_path / "out"
    if fmt == "hf":
        names, _, _ = tiny.write_hf(tmp_path / "in", "safetensors", 2, index=True)
        cls = FullModelHFCheckpointer
    else:
        tiny.write_meta(tmp_path / "in")
        names, cls = ["consolidated.00.pth"], FullModelMetaCheckpointer
    ckpt = cls(str(tmp_path / "in"), names, "LLAMA2", str(out), keep_last_n_checkpoints=2)
    model = ckpt.load_checkpoint()["model"]
    for step in (10, 20, 30):
        scaled = {k: v * step for k, v in model.items()}
        ckpt.save_checkpoint(dict(_recipe_state(0, steps_run=step), model=scaled),
                             epoch=0, intermediate_checkpoint=True, step=step)
    assert sorted(os.listdir(out)) == ["step_20", "step_30"]
    step_dir = out / "step_30"
    assert "recipe_state.pt" in os.listdir(step_dir)

    # Resume from the newest step folder as its own checkpoint_dir.
    files = names if fmt == "hf" else ["meta_model_0.pt"]
    resumed = cls(str(step_dir), files, "LLAMA2", str(out), recipe_checkpoint="recipe_state.pt",
                  resume_from_checkpoint=True).load_checkpoint()
    assert resumed["steps_run"] == 30 and resumed["epochs_run"] == 0
    _assert_state_equal(resumed["model"], {k: v * 30 for k, v in model.items()})

    # keep_last_n_checkpoints=None keeps every step folder.
    keep_all = cls(str(tmp_path / "in"), names, "LLAMA2", str(out))
    keep_all.save_checkpoint({"model": model}, epoch=0, step=40)
    keep_all.save_checkpoint({"model": model}, epoch=0, step=50)
    assert sorted(os.listdir(out)) == ["step_20", "step_30", "step_40", "step_50"]


def test_keep_last_n_must_be_positive(tmp_path, tiny):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"keep_last_n_checkpoints must be None or >= 1, got 0"):
        FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(tmp_path), keep_last_n_checkpoints=0)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, tiny):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    out = tmp_path / "out"
    out.mkdir()
    dead_pid = 2**22 + 12345  # above pid_max on default kernels: never a live process
    stale = out / f".torchtune_model_0.pt.tmp-torchtune-{dead_pid}-deadbeef"
    stale.write_bytes(b"partial")
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    ckpt.save_checkpoint(ckpt.load_checkpoint(), epoch=0)
    assert sorted(os.listdir(out)) == ["torchtune_model_0.pt"]


def test_meta_save_into_checkpoint_dir_keeps_params_and_tokenizer(tmp_path, tiny):
    # The seed's Meta config saves into its own checkpoint_dir.
    tiny.write_meta(tmp_path)
    params = (tmp_path / "params.json").read_bytes()
    ckpt = FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path))
    ckpt.save_checkpoint(ckpt.load_checkpoint(), epoch=0)
    assert (tmp_path / "params.json").read_bytes() == params
    assert sorted(os.listdir(tmp_path)) == ["consolidated.00.pth", "meta_model_0.pt", "params.json", "tokenizer.model"]


def test_save_without_model_or_adapter_is_a_clear_error(tmp_path, tiny):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"needs state_dict\['model'\] unless adapter_only=True; got keys \['seed'\]"):
        ckpt.save_checkpoint({"seed": 1}, epoch=0)
    with pytest.raises(ValueError, match=r"adapter_only=True but state_dict has no 'adapter'"):
        ckpt.save_checkpoint({"seed": 1}, epoch=0, adapter_only=True)
    # A LoRA model's unmerged state dict is not a model checkpoint: the key is named.
    lora_sd = dict(tiny.tune_sd(), **{"layers.0.attn.q_proj.lora_a.weight": torch.zeros(2, 32)})
    with pytest.raises(ValueError, match=r"state_dict\['model'\] does not match model_type LLAMA2.*'layers\.0\.attn\.q_proj\.lora_a\.weight'"):
        ckpt.save_checkpoint({"model": lora_sd}, epoch=0)
