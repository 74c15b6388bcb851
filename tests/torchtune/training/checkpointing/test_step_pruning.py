"""keep_last_n_checkpoints deletes only step folders this run wrote (issue 14, item 4)."""

import os

import torch

from torchtune.training.checkpointing import FullModelTorchTuneCheckpointer


def _run(tmp_path, out, keep=None, resume_from=None):
    """A TorchTune-format run writing into ``out`` (resuming from a step folder if given)."""
    if resume_from is None:
        return FullModelTorchTuneCheckpointer(str(tmp_path / "in"), ["m.pt"], "LLAMA2", str(out),
                                              keep_last_n_checkpoints=keep)
    return FullModelTorchTuneCheckpointer(str(resume_from), ["torchtune_model_0.pt"], "LLAMA2", str(out),
                                          recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True,
                                          keep_last_n_checkpoints=keep)


def _save_step(ckpt, tiny, step):
    ckpt.save_checkpoint(dict(tiny.recipe_state(0, step), model=tiny.tune_sd()), epoch=0, step=step,
                         intermediate_checkpoint=True)


def _setup(tmp_path, tiny):
    (tmp_path / "in").mkdir()
    torch.save(tiny.tune_sd(), tmp_path / "in" / "m.pt")
    out = tmp_path / "out"
    out.mkdir()
    return out


def test_folders_named_like_steps_are_neither_fatal_nor_deleted(tmp_path, tiny):
    out = _setup(tmp_path, tiny)
    for stray in ("step_01", "step_5_backup", "step_7"):  # a user's copies, none with our manifest
        (out / stray).mkdir()
        (out / stray / "notes.txt").write_text(stray)
    (out / "step_3").symlink_to(out / "step_01")
    ckpt = _run(tmp_path, out, keep=1)
    for step in (10, 20, 30):
        _save_step(ckpt, tiny, step)
    assert sorted(os.listdir(out)) == ["step_01", "step_3", "step_30", "step_5_backup", "step_7"]
    assert (out / "step_01" / "notes.txt").read_text() == "step_01"


def test_another_runs_step_folders_are_kept(tmp_path, tiny):
    out = _setup(tmp_path, tiny)
    _save_step(_run(tmp_path, out, keep=1), tiny, 5)  # an earlier, finished run
    ours = _run(tmp_path, out, keep=1)
    _save_step(ours, tiny, 10)
    _save_step(ours, tiny, 20)
    assert sorted(os.listdir(out)) == ["step_20", "step_5"]


def test_resumed_run_prunes_the_interrupted_runs_step_folders(tmp_path, tiny):
    out = _setup(tmp_path, tiny)
    first = _run(tmp_path, out, keep=2)
    for step in (10, 20):
        _save_step(first, tiny, step)  # ... and then the run was killed
    resumed = _run(tmp_path, out, keep=2, resume_from=out / "step_20")
    assert resumed.load_checkpoint()["steps_run"] == 20
    _save_step(resumed, tiny, 30)
    assert sorted(os.listdir(out)) == ["step_20", "step_30"]
    _save_step(resumed, tiny, 40)
    assert sorted(os.listdir(out)) == ["step_30", "step_40"]
