"""Every fault of the user's making ends `tune run` with one `error:` line and status 1;
bugs keep their traceback; TUNE_TRACEBACK=1 shows the traceback of a user error too."""

import os
import subprocess
import sys
import textwrap

from torchtune._cli.tune import main as tune_main

from recipe_helpers import (
    REPO,
    SLOW_STEPS,
    common_overrides,
    copy_meta_checkpoint,
    losses,
    run_recipe,
    start_recipe,
)

FULL = ("full_finetune_single_device", "stories260K/full_single_device")
LORA = ("lora_finetune_single_device", "stories260K/lora_single_device")


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def tune_in_process(monkeypatch, capsys, recipe, overrides) -> tuple:
    """`tune run` in this process (no interpreter start-up): (exit status, stderr)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    status = tune_main(["run", *recipe[:1], "--config", recipe[1], *overrides])
    return status, capsys.readouterr().err


def test_missing_data_file_is_one_line_and_traceback_on_request(tmp_path):
    overrides = common_overrides(tmp_path / "run") + [f"dataset.data_files={tmp_path}/nope.txt"]
    out = run_recipe(*LORA, overrides, expect_ok=False)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    (line,) = error_lines(out.stderr)
    assert f"{tmp_path}/nope.txt" in line

    env = dict(os.environ, TUNE_TRACEBACK="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torchtune._cli.tune", "run", *LORA[:1], "--config", LORA[1], *overrides]
    shown = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode != 0 and "Traceback" in shown.stderr and "nope.txt" in shown.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    module = tmp_path / "buggy_component.py"
    module.write_text(textwrap.dedent("""
        def broken_logger(**kwargs):
            return {}["a key the code forgot to set"]
    """))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torchtune._cli.tune", "run", *FULL[:1], "--config", FULL[1],
           *common_overrides(tmp_path / "run"), "metric_logger._component_=buggy_component.broken_logger"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "KeyError" in out.stderr and not error_lines(out.stderr)


def test_truncated_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "ckpt"
    copy_meta_checkpoint(ckpt)
    data = (ckpt / "consolidated.00.pth").read_bytes()
    (ckpt / "consolidated.00.pth").write_bytes(data[: len(data) // 2])
    status, err = tune_in_process(monkeypatch, capsys, FULL, common_overrides(tmp_path / "run") + [
        f"checkpointer.checkpoint_dir={ckpt}"
    ])
    assert status == 1
    (line,) = error_lines(err)
    assert "consolidated.00.pth" in line and "truncated" in line


def test_wrong_embed_dim_names_the_tensor_and_both_shapes(tmp_path, monkeypatch, capsys):
    status, err = tune_in_process(monkeypatch, capsys, FULL, common_overrides(tmp_path / "run") + [
        "model.embed_dim=128"
    ])
    assert status == 1
    (line,) = error_lines(err)
    assert "tok_embeddings.weight" in line and "(512, 64)" in line and "(512, 128)" in line


def test_second_run_on_the_same_output_dir_stops_at_once(tmp_path):
    out = tmp_path / "run"
    first = start_recipe(*FULL, common_overrides(out, max_steps_per_epoch=40) + SLOW_STEPS)
    try:
        lock = out / ".tune.lock"
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-3000:]
        second = run_recipe(*FULL, common_overrides(out), expect_ok=False)
        assert first.poll() is None  # the first run is unharmed and still going
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 1 and "Traceback" not in second.stderr
    (line,) = error_lines(second.stderr)
    assert str(out) in line and f"pid {first.pid} " in line and "in use by another run" in line


def test_tokenizer_kept_in_output_dir_is_never_replaced_by_a_save(tmp_path, monkeypatch, capsys):
    # The run reads its tokenizer from output_dir; the checkpoint folder holds another
    # tokenizer.model, which every Meta save copies to output_dir/tokenizer.model.
    ckpt, out = tmp_path / "ckpt", tmp_path / "run"
    copy_meta_checkpoint(ckpt)
    (ckpt / "tokenizer.model").write_bytes((REPO / "tests" / "assets" / "llama2_tokenizer.model").read_bytes())
    out.mkdir()
    mine = (REPO / "torchtune" / "assets" / "stories260K" / "tokenizer.model").read_bytes()
    (out / "tokenizer.model").write_bytes(mine)
    status, err = tune_in_process(monkeypatch, capsys, LORA, common_overrides(out) + [
        f"checkpointer.checkpoint_dir={ckpt}", f"tokenizer.path={out / 'tokenizer.model'}",
    ])
    assert status == 1
    (line,) = error_lines(err)
    assert f"each save writes {out / 'tokenizer.model'} (a copy of {ckpt / 'tokenizer.model'})" in line
    assert (out / "tokenizer.model").read_bytes() == mine and not (out / "meta_model_0.pt").exists()


def test_shipped_device_cuda_on_a_machine_without_one_is_one_line(tmp_path, monkeypatch, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    status, err = tune_in_process(monkeypatch, capsys, LORA, common_overrides(tmp_path / "run") + [
        "device=cuda", "dtype=bf16",
    ])
    assert status == 1
    (line,) = error_lines(err)
    assert line.startswith("error: device: cuda is not available here") and "set device=cpu or device=auto" in line


def test_sample_longer_than_the_model_is_refused_at_setup(tmp_path, monkeypatch, capsys):
    # The whole Shakespeare file as one sample, cut at 1024 tokens, for a model whose
    # positions end at 512: before, one step trained and then the RoPE cache overflowed.
    out = tmp_path / "run"
    status, err = tune_in_process(monkeypatch, capsys, LORA, common_overrides(out) + [
        "dataset.packed=False", "dataset.sample_by=document", "dataset.max_seq_len=1024",
    ])
    assert status == 1 and "IndexError" not in err
    (line,) = error_lines(err)
    assert ("error: dataset: sample 0 has 1024 tokens, more than the model's max_seq_len 512 (its "
            "positions end there); set dataset.max_seq_len=512") in line
    assert not (out / "logs" / "log.jsonl").exists() or not losses(out)  # no step trained


def test_ctrl_c_in_training_is_one_line_naming_the_latest_checkpoint(tmp_path):
    import signal

    from recipe_helpers import tune_command

    out = tmp_path / "run"
    overrides = common_overrides(out, max_steps_per_epoch=40, save_every_n_steps=2) + SLOW_STEPS
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    # A terminal's Ctrl-C: SIGINT with Python's handler installed, even when pytest itself
    # runs as a background job (which starts children with SIGINT ignored).
    proc = subprocess.Popen(tune_command(*LORA, overrides), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        manifest = out / "step_4" / "checkpoint_manifest.json"
        while not manifest.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    assert line.startswith("interrupted: stopped in epoch 1 after step ")
    steps = sorted(int(p.name.split("_")[1]) for p in out.glob("step_*"))
    assert f"the latest complete checkpoint is in {out / f'step_{steps[-1]}'} (resume with" in line


def test_lora_model_that_does_not_fit_is_one_line_before_building(tmp_path, monkeypatch, capsys):
    status, err = tune_in_process(monkeypatch, capsys, LORA, common_overrides(tmp_path / "run") + [
        "model.embed_dim=128",
    ])
    assert status == 1
    (line,) = error_lines(err)
    assert "tok_embeddings.weight: checkpoint (512, 64) vs model (512, 128)" in line
    # 4 heads of 16 and 2 kv heads of 16: the same tensor shapes as the checkpoint's 8 and 4
    # heads of 8, so the weights would load into the wrong attention layout.
    status, err = tune_in_process(monkeypatch, capsys, LORA, common_overrides(tmp_path / "run2") + [
        "model.num_heads=4", "model.num_kv_heads=2",
    ])
    assert status == 1
    (line,) = error_lines(err)
    assert "model: the config builds attention with num_heads 4, num_kv_heads 2, head_dim 16, dim 64, but params.json" in line
