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
