"""The `tune` command as a user runs it: a real subprocess of the console entry point."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchtune._recipe_registry import get_all_recipes

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "recipes" / "configs"


def tune(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", *args],
        capture_output=True, text=True, cwd=cwd or REPO, timeout=120,
    )


def test_help_lists_subcommands():
    out = tune("--help")
    assert out.returncode == 0
    for sub in ("ls", "cp", "cat", "run", "validate", "download"):
        assert sub in out.stdout


def test_ls_lists_every_recipe_and_config():
    out = tune("ls")
    assert out.returncode == 0
    for recipe in get_all_recipes():
        assert recipe.name in out.stdout
        for config in recipe.configs:
            assert config.name in out.stdout


def test_registry_matches_files_on_disk():
    registered = set()
    for recipe in get_all_recipes():
        assert (REPO / "recipes" / recipe.file_path).is_file(), recipe.file_path
        for config in recipe.configs:
            assert (CONFIGS / config.file_path).is_file(), config.file_path
            registered.add(config.file_path)
    on_disk = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert on_disk == registered


def test_cat_prints_config():
    out = tune("cat", "llama2/7B_lora_single_device")
    assert out.returncode == 0
    assert out.stdout == (CONFIGS / "llama2" / "7B_lora_single_device.yaml").read_text()


def test_cat_unknown_config():
    out = tune("cat", "llama2/nope")
    assert out.returncode == 1 and "llama2/nope" in out.stderr


def test_cp_copies_and_refuses_to_overwrite(tmp_path):
    dest = tmp_path / "my.yaml"
    out = tune("cp", "llama2/7B_lora_single_device", str(dest))
    assert out.returncode == 0 and dest.read_text().startswith("# LoRA fine-tune of Llama 2 7B")
    dest.write_text("edited")
    out = tune("cp", "llama2/7B_lora_single_device", str(dest))
    assert out.returncode == 1 and "--force" in out.stderr
    assert dest.read_text() == "edited"
    out = tune("cp", "llama2/7B_lora_single_device", str(dest), "--force")
    assert out.returncode == 0 and dest.read_text() != "edited"


def test_cp_recipe_into_folder(tmp_path):
    out = tune("cp", "lora_finetune_single_device", str(tmp_path))
    assert out.returncode == 0
    assert (tmp_path / "lora_finetune_single_device.py").read_text().startswith('"""LoRA')


@pytest.mark.parametrize(
    "config", sorted(c.name for r in get_all_recipes() for c in r.configs)
)
def test_every_builtin_config_validates(config, capsys):
    from torchtune._cli.tune import main  # in-process: one subprocess per config is slow

    # The hf/* configs leave the model folder to the command line, and say so in one line.
    overrides = ["model_dir=/models/SmolLM2-135M-Instruct"] if config.startswith("hf/") else []
    if overrides:
        assert main(["validate", config]) == 1
        assert capsys.readouterr().err == "error: model_dir: required; set it on the command line (model_dir=...)\n"
    assert main(["validate", config, *overrides]) == 0, capsys.readouterr().err
    assert "well-formed" in capsys.readouterr().out


def test_validate_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (CONFIGS / "llama2" / "7B_lora_single_device.yaml").read_text()
    text = text.replace("batch_size: 2", "batch_size: two").replace("epochs: 1\n", "")
    text = text.replace("torch.optim.AdamW", "torch.optim.AdamWW")
    text += "\nunknown_key: 1\n"
    bad.write_text(text)
    out = tune("validate", str(bad), "--recipe", "lora_finetune_single_device", "loss.bogus=1")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert any(l.startswith("error: batch_size: expected int") for l in lines)
    assert any(l.startswith("error: epochs: missing required key") for l in lines)
    assert any("unknown_key: unknown key" in l for l in lines)
    assert any("torch.optim.AdamWW" in l and "torch.optim.AdamW" in l for l in lines)
    assert any(l.startswith("error: loss: got an unexpected keyword argument 'bogus'") for l in lines)
    assert len(lines) == 5


def test_validate_reports_keys_that_cannot_work_together(capsys):
    from torchtune._cli.tune import main

    code = main(["validate", "stories260K/full_single_device", "gradient_accumulation_steps=4"])
    assert code == 1
    err = capsys.readouterr().err
    assert "optimizer_in_bwd: True steps during every backward" in err
    assert "set gradient_accumulation_steps: 1 (it is 4) or optimizer_in_bwd: False" in err


def test_validate_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    out = tune("validate", str(bad))
    assert out.returncode == 1 and f"{bad}:" in out.stderr and "yaml syntax error" in out.stderr


def test_validate_notes_components_from_outside_torchtune(tmp_path):
    # A config is code: `_component_: os.system` is well-formed, and validate says what
    # it would import, on stderr, without changing the exit status.
    (tmp_path / "my_components.py").write_text("def build(size=1):\n    return size\n")
    config = tmp_path / "custom.yaml"
    config.write_text(
        "model:\n  _component_: my_components.build\n  size: 2\n"
        "hook:\n  _component_: os.system\n  command: echo hi\n"
        "optimizer:\n  _component_: torch.optim.AdamW\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "validate", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=120, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"Config is well-formed: {config}\n"
    assert out.stderr == (
        "note: this config imports code from outside torchtune and its dependencies: "
        "my_components.build (at model._component_), os.system (at hook._component_). "
        "A config is code: run only configs you trust.\n"
    )


def test_validate_notes_outside_code_after_errors_too(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("hook:\n  _component_: os.system\n  bogus: 1\n")
    out = tune("validate", str(config))
    assert out.returncode == 1
    error, note = out.stderr.strip().splitlines()
    assert error.startswith("error: hook: got an unexpected keyword argument 'bogus'")
    assert note.startswith("note: this config imports code from outside torchtune")
    assert "os.system (at hook._component_)" in note


def test_validate_component_from_unset_variable_is_one_line(tmp_path, monkeypatch, capsys):
    from torchtune._cli.tune import main

    monkeypatch.delenv("TT_TEST_UNSET_COMPONENT", raising=False)
    config = tmp_path / "env.yaml"
    config.write_text("model:\n  _component_: ${oc.env:TT_TEST_UNSET_COMPONENT}\n")
    assert main(["validate", str(config)]) == 1
    error, note = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("error: model._component_: cannot resolve value: ")
    assert "TT_TEST_UNSET_COMPONENT" in error
    assert "${oc.env:TT_TEST_UNSET_COMPONENT} (at model._component_)" in note


def test_validate_shipped_config_notes_nothing():
    out = tune("validate", "llama2/7B_lora_single_device")
    assert out.returncode == 0 and "well-formed" in out.stdout
    assert out.stderr == ""


def test_run_unknown_recipe():
    out = tune("run", "no_such_recipe", "--config", "x")
    assert out.returncode == 1 and "no_such_recipe" in out.stderr


def test_run_script_path_with_overrides(tmp_path):
    script = tmp_path / "echo_recipe.py"
    script.write_text(
        "import sys\n"
        "from omegaconf import OmegaConf\n"
        "from torchtune import config\n"
        "@config.parse\n"
        "def recipe_main(cfg):\n"
        "    print(OmegaConf.to_yaml(cfg, resolve=True))\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(recipe_main())\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("a: 1\nb: {c: 2}\n")
    out = tune("run", str(script), "--config", str(cfg), "b.c=3", "~a", "d=[1,2]")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["b:", "c:", "3", "d:", "-", "1", "-", "2"]


def test_run_reports_recipe_config_errors():
    out = tune("run", "full_finetune_single_device", "--config", "stories260K/full_single_device",
               "batch_size=two", "typo_key=1")
    assert out.returncode == 1
    assert "batch_size: expected int" in out.stderr and "typo_key: unknown key" in out.stderr


def test_run_refuses_launcher_args_for_single_device_recipe():
    out = tune("run", "--nproc_per_node", "2", "full_finetune_single_device", "--config",
               "stories260K/full_single_device")
    assert out.returncode == 1
    assert "full_finetune_single_device runs on one device" in out.stderr
    assert "full_finetune_distributed" in out.stderr


@pytest.mark.parametrize("argv", [
    ("nope",),
    ("validate",),
    ("run", "lora_finetune_single_device"),
    ("download", "a/b", "--output-dir", "/tmp/x", "--bogus"),
], ids=["subcommand", "validate-args", "run-without-config", "download-option"])
def test_argument_mistakes_are_one_line_with_status_1(argv):
    out = tune(*argv)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
