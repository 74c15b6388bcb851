"""`tune cp -n/--make-parents`, `tune cat FILE/--sort` and `torchtune.__version__`, run as a
user runs them: a real subprocess of the `tune` entry point."""

import importlib.metadata
import subprocess
import sys

import yaml
from omegaconf import OmegaConf

from tests.torchtune._cli.test_cli import CONFIGS, REPO, tune

CONFIG = "llama2/7B_lora_single_device"
CONFIG_FILE = CONFIGS / "llama2" / "7B_lora_single_device.yaml"


def _one_error_line(out):
    return out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1


def test_cp_no_clobber_keeps_existing_file(tmp_path):
    dest = tmp_path / "my.yaml"
    dest.write_text("edited")
    for flag in ("-n", "--no-clobber"):
        out = tune("cp", CONFIG, str(dest), flag)
        assert out.returncode == 0, out.stderr
        assert str(dest) in out.stdout and len(out.stdout.strip().splitlines()) == 1
        assert dest.read_text() == "edited"


def test_cp_no_clobber_still_copies_when_absent(tmp_path):
    dest = tmp_path / "new.yaml"
    out = tune("cp", CONFIG, str(dest), "-n")
    assert out.returncode == 0 and dest.read_text() == CONFIG_FILE.read_text()


def test_cp_missing_parent_needs_make_parents(tmp_path):
    dest = tmp_path / "a" / "b" / "my.yaml"
    out = tune("cp", CONFIG, str(dest))
    assert out.returncode == 1 and _one_error_line(out) and "--make-parents" in out.stderr
    assert not (tmp_path / "a").exists()
    out = tune("cp", CONFIG, str(dest), "--make-parents")
    assert out.returncode == 0, out.stderr
    assert dest.read_text() == CONFIG_FILE.read_text()


def test_cp_force_and_no_clobber_conflict(tmp_path):
    out = tune("cp", CONFIG, str(tmp_path / "x.yaml"), "--force", "-n")
    assert out.returncode == 1 and _one_error_line(out)


def test_cat_local_yaml_file(tmp_path):
    local = tmp_path / "mine.yaml"
    local.write_text("z: 1\na: {c: 2, b: ${z}}\n")
    out = tune("cat", str(local))
    assert out.returncode == 0, out.stderr
    assert out.stdout == local.read_text()


def test_cat_sort_builtin_is_sorted_valid_yaml():
    out = tune("cat", CONFIG, "--sort")
    assert out.returncode == 0, out.stderr
    assert out.stdout != CONFIG_FILE.read_text()
    printed = yaml.safe_load(out.stdout)
    assert printed == OmegaConf.to_container(OmegaConf.load(CONFIG_FILE))
    top = [line.split(":")[0] for line in out.stdout.splitlines()
           if line and not line[0].isspace() and not line.startswith("-")]
    assert top == sorted(top) and len(top) > 5


def test_cat_sort_local_file_sorts_nested_keys_and_keeps_interpolations(tmp_path):
    local = tmp_path / "mine.yaml"
    local.write_text("z: 1\na:\n  c: 2\n  b: ${z}\n")
    out = tune("cat", str(local), "--sort")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a:", "b:", "${z}", "c:", "2", "z:", "1"]


def test_cat_unknown_name_or_missing_file(tmp_path):
    for name in ("llama2/nope", str(tmp_path / "missing.yaml")):
        out = tune("cat", name, "--sort")
        assert out.returncode == 1 and _one_error_line(out) and name in out.stderr


def test_cat_sort_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    out = tune("cat", str(bad), "--sort")
    assert out.returncode == 1 and _one_error_line(out) and str(bad) in out.stderr


def test_version_is_installed_package_version():
    out = subprocess.run(
        [sys.executable, "-c", "import torchtune; print(torchtune.__version__)"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == importlib.metadata.version("torchtune")


def test_version_falls_back_without_package_metadata(monkeypatch):
    import torchtune

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert torchtune._package_version() == "0.1.0"
