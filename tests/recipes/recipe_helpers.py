"""Shared helpers for recipe tests: tiny real checkpoints and `tune run` in a subprocess.

The model is the bundled stories260K (a real pretrained Llama 2 architecture model with
260K parameters), so recipes run end to end in seconds on a CPU.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from torchtune.models.llama2._convert_weights import meta_to_tune, tune_to_hf
from torchtune.training.metric_logging import DiskLogger

REPO = Path(__file__).resolve().parents[2]
STORIES = REPO / "torchtune" / "assets" / "stories260K"
ALPACA = REPO / "tests" / "assets" / "alpaca_1000.json"
SIZES = dict(num_heads=8, num_kv_heads=4, dim=64)


# Overrides that slow every step with a validation pass (no training state changes), so a
# test can kill a run between two checkpoints.
SLOW_STEPS = [
    "validation_dataset={_component_: torchtune.datasets.text_completion_dataset, source: text, "
    "data_files: torchtune/assets/tinyshakespeare.txt, sample_by: paragraph, max_seq_len: 512, packed: True, "
    "split: 'train[:400]'}",
    "validate_every_n_steps=1",
]


def tune_command(recipe: str, config: str, overrides: list) -> list:
    return [sys.executable, "-m", "torchtune._cli.tune", "run", recipe, "--config", config, *overrides]


def run_recipe(recipe: str, config: str, overrides: list, expect_ok: bool = True, timeout: int = 300):
    """Run `tune run` as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    out = subprocess.run(
        tune_command(recipe, config, overrides), cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    if expect_ok and out.returncode != 0:
        raise AssertionError(f"tune run failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return out


# A rank of a gloo job has now and then died in torch's native teardown ("terminate called
# without an active exception", SIGABRT) after its work was done: seen twice in a few
# hundred launches on loaded 2-core machines, never reproduced on demand. The recipes
# align their ranks before tearing down; a launch that still ends that way is retried once.
NATIVE_ABORT = "terminate called without an active exception"


def run_launched(cmd: list, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """``subprocess.run`` of a ``tune run --nproc_per_node N ...`` command line, retried once
    when a rank died of the native abort above; any other outcome is returned as it is."""
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 and NATIVE_ABORT in out.stderr and "SIGABRT" in out.stderr:
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return out


def start_recipe(recipe: str, config: str, overrides: list) -> subprocess.Popen:
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        tune_command(recipe, config, overrides), cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def kill_when(proc: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``path`` exists (fails if the run ends first)."""
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def losses(output_dir: Path) -> dict:
    """{step: loss} from the recipe's DiskLogger file (``log.jsonl``)."""
    records = DiskLogger.read(Path(output_dir) / "logs" / "log.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def common_overrides(output_dir: Path, **extra) -> list:
    """Small, fast settings on top of a stories260K config."""
    settings = {
        "output_dir": str(output_dir),
        "metric_logger.filename": "log.jsonl",
        "log_every_n_steps": 1,
        "log_peak_memory_stats": False,
        "dataset.max_seq_len": 64,
        "batch_size": 2,
        "max_steps_per_epoch": 4,
        "lr_scheduler.num_warmup_steps": 1,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def alpaca_dataset_overrides() -> list:
    return [
        "dataset._component_=torchtune.datasets.alpaca_dataset",
        "~dataset.sample_by",
        "dataset.source=json",
        f"dataset.data_files={ALPACA}",
        "dataset.packed=False",
        "dataset.train_on_input=False",
        "dataset.max_seq_len=256",  # the prompt alone is ~140 tokens with this 512-piece vocab
    ]


def write_hf_checkpoint(folder: Path, shards: int = 2, safetensors: bool = False) -> list:
    """stories260K in HF layout, split into ``shards`` files, with config.json; returns names."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    sd = meta_to_tune(torch.load(STORIES / "consolidated.00.pth", weights_only=True))
    hf = tune_to_hf(sd, **SIZES)
    keys = list(hf)
    ext = "safetensors" if safetensors else "bin"
    prefix = "model" if safetensors else "pytorch_model"
    names, weight_map = [], {}
    for i in range(shards):
        name = f"{prefix}-{i + 1:05d}-of-{shards:05d}.{ext}"
        part = {k: hf[k].clone() for k in keys[i::shards]}
        if safetensors:
            from safetensors.torch import save_file

            save_file(part, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(part, folder / name)
        names.append(name)
        weight_map.update({k: name for k in part})
    index = f"{prefix}.{ext}.index.json" if not safetensors else "model.safetensors.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=5,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    ).save_pretrained(folder)
    shutil.copy(STORIES / "tokenizer.model", folder / "tokenizer.model")
    return names


def copy_meta_checkpoint(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("consolidated.00.pth", "params.json", "tokenizer.model"):
        shutil.copy(STORIES / name, folder / name)


def load_meta(path: Path) -> dict:
    return meta_to_tune(torch.load(path, weights_only=True))


def assert_trained_alike(a: dict, b: dict, start: dict, rel: float = 1e-3) -> None:
    """Two runs that differ only in the order of their fp32 sums (ranks, accumulation,
    process counts) trained the same weights: ``||a - b|| <= rel * ||a - start||`` over the
    whole state dict, where ``start`` is what training began from (tensors it lacks, such as
    fresh LoRA ``lora_a``, count from zero).

    Why a norm and not an elementwise tolerance: Adam divides each gradient element by its
    own running scale, so an element whose gradient is a cancelling sum (near zero) moves
    by up to lr per step in a direction set by rounding; no elementwise bound holds on
    every CPU. Summed over the model such elements are a negligible part of what training
    changed, while a real fault (a rank's data lost, gradients not averaged) changes the
    update by a fraction of order one.
    """
    assert a.keys() == b.keys()
    diff = update = 0.0
    for k in a:
        base = start.get(k)
        ref = torch.zeros_like(a[k]) if base is None or base.shape != a[k].shape else base.to(a[k].dtype)
        diff += float((a[k].double() - b[k].double()).square().sum())
        update += float((a[k].double() - ref.double()).square().sum())
    assert update > 0, "training changed nothing"
    assert diff ** 0.5 <= rel * update ** 0.5, (
        f"||a - b|| = {diff ** 0.5:.3g} exceeds {rel} x ||a - start|| = {rel * update ** 0.5:.3g}"
    )


def assert_state_dicts_equal(a: dict, b: dict, atol: Optional[float] = None) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol is None:
            assert torch.equal(a[k], b[k]), f"{k} differs"
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")
