"""The bundled stories260K configs find their files from any folder (issue 24, item 17):
``${assets:PATH}`` is the path inside the installed package."""

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from torchtune.config import bundled_asset, load_config

REPO = Path(__file__).resolve().parents[3]
STORIES_CONFIGS = sorted((REPO / "recipes" / "configs" / "stories260K").glob("*.yaml"))


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_resolver_gives_the_packaged_file():
    import torchtune

    path = bundled_asset("stories260K/tokenizer.model")
    assert path == str(Path(torchtune.__file__).resolve().parent / "assets" / "stories260K" / "tokenizer.model")
    assert os.path.isfile(path)


def test_every_bundled_path_of_the_stories_configs_exists_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(STORIES_CONFIGS) >= 9
    for config in STORIES_CONFIGS:
        raw = OmegaConf.to_container(load_config(str(config)), resolve=False)
        bundled = [s for s in _strings(raw) if "${assets:" in s]
        assert bundled, config.name
        resolved = OmegaConf.to_container(load_config(str(config)), resolve=True)
        for value in _strings(resolved):
            assert not value.startswith(("assets/", "tests/assets/")), f"{config.name}: {value}"
        for text in bundled:
            value = OmegaConf.create({"v": text}).v
            assert os.path.exists(value), f"{config.name}: {text} -> {value}"


def test_generate_runs_from_any_folder(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "generate", "--config", "stories260K/generation",
         "max_new_tokens=8"],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
