"""End-to-end runs of the DPO recipes through `tune run` on the bundled stories260K model and
the bundled preference pairs (torchtune/assets/dpo_en_demo_subset.json): the implicit reward
accuracy and margin rise, a run killed after a step checkpoint resumes bit-exactly, the
merged model (HF shards, the input's format) loads in transformers, and the distributed
recipes on 2 CPU processes (gloo) give the one-process result.
"""

import os
import subprocess
import sys

import pytest
import torch

from recipe_helpers import (
    REPO,
    STORIES,
    assert_state_dicts_equal,
    assert_trained_alike,
    kill_when,
    run_launched,
    run_recipe,
    start_recipe,
    write_hf_checkpoint,
)
from torchtune.training.metric_logging import DiskLogger

LORA_SD = ("lora_dpo_single_device", "stories260K/lora_dpo_single_device")
LORA = ("lora_dpo_distributed", "stories260K/lora_dpo_distributed")
FULL = ("full_dpo_distributed", "stories260K/full_dpo_distributed")
ENV = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
STEPS = 24  # 6 epochs x 4 steps of 4 pairs: 16 fixed pairs (train[:30] at 128 tokens)


def settings(output_dir, **extra) -> list:
    values = {
        "output_dir": output_dir,
        "metric_logger.filename": "log.jsonl",
        "dataset.split": "'train[:30]'",
        "dataset.max_seq_len": 128,
        "batch_size": 4,
        "epochs": 6,
        "lr_scheduler.num_warmup_steps": 2,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def metrics(output_dir) -> dict:
    return {r["step"]: r for r in DiskLogger.read(output_dir / "logs" / "log.jsonl") if "loss" in r}


def close(a: float, b: float) -> bool:
    """Within 1e-5, relative for the summed log-probabilities (hundreds of tokens, |x| ~ 100:
    fp32 summation order alone moves them by ~1e-5)."""
    return abs(a - b) < 1e-5 * max(1.0, abs(a))


def run_distributed(nproc: int, recipe: str, config: str, overrides: list):
    out = run_launched(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "--standalone", "--nproc_per_node", str(nproc),
         recipe, "--config", config, *overrides], ENV,
    )
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    names = write_hf_checkpoint(base, shards=2)
    return base, [
        "checkpointer._component_=torchtune.utils.FullModelHFCheckpointer",
        f"checkpointer.checkpoint_dir={base}",
        f"checkpointer.checkpoint_files=[{','.join(str(base / n) for n in names)}]",
    ], names


@pytest.fixture(scope="module")
def straight(tmp_path_factory, hf_base):
    out = tmp_path_factory.mktemp("straight")
    run_recipe(*LORA_SD, settings(out, save_every_n_steps=4) + hf_base[1])
    return out


@pytest.mark.slow
def test_rewards_accuracy_and_margin_rise(straight):
    m = metrics(straight)
    assert sorted(m) == list(range(1, STEPS + 1))
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"):
        assert all(key in r for r in m.values()), key
    assert m[1]["rewards/margins"] == 0.0 and abs(m[1]["loss"] - 0.6931) < 1e-3  # policy == reference
    last = [m[s] for s in range(STEPS - 7, STEPS + 1)]  # the last 2 epochs
    assert sum(r["rewards/accuracies"] for r in last) / len(last) > 0.5
    first_epoch = sum(m[s]["rewards/margins"] for s in range(1, 5)) / 4
    last_epoch = sum(m[s]["rewards/margins"] for s in range(STEPS - 3, STEPS + 1)) / 4
    assert last_epoch > first_epoch + 0.5, (first_epoch, last_epoch)


@pytest.mark.slow
def test_killed_run_resumes_bit_exactly_and_merged_model_loads_in_transformers(tmp_path, straight, hf_base):
    base, ckpt, names = hf_base
    killed = tmp_path / "killed"
    proc = start_recipe(*LORA_SD, settings(killed, save_every_n_steps=4) + ckpt)
    kill_when(proc, killed / "step_12" / "recipe_state.pt")
    last = max(killed.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    step = int(last.name.split("_")[1])
    assert 12 <= step < STEPS
    adapter = next(last.glob("adapter_*.pt")).name  # adapter_{epoch}.pt of the epoch under way
    resumed = tmp_path / "resumed"
    run_recipe(*LORA_SD, settings(resumed, save_every_n_steps=4) + ckpt + [
        f"checkpointer.checkpoint_dir={last}", f"checkpointer.adapter_checkpoint={adapter}",
        "checkpointer.recipe_checkpoint=recipe_state.pt", "resume_from_checkpoint=True",
    ])
    ms, mr = metrics(straight), metrics(resumed)
    assert sorted(mr) == list(range(step + 1, STEPS + 1))
    for s in mr:  # bit for bit, every metric
        assert {k: v for k, v in mr[s].items() if k not in ("tokens_per_second", "timestamp")} == {
            k: v for k, v in ms[s].items() if k not in ("tokens_per_second", "timestamp")}, s
    for name in names:  # the merged model, in the input's shards
        assert_state_dicts_equal(torch.load(straight / "epoch_5" / name, weights_only=True),
                                 torch.load(resumed / "epoch_5" / name, weights_only=True))
    assert_state_dicts_equal(torch.load(straight / "adapter_5.pt", weights_only=True),
                             torch.load(resumed / "adapter_5.pt", weights_only=True))

    # The merged output is an ordinary HF model folder: transformers loads it and computes
    # the trained policy (not the base model).
    transformers = pytest.importorskip("transformers")
    merged = transformers.LlamaForCausalLM.from_pretrained(straight / "epoch_5").eval()
    original = transformers.LlamaForCausalLM.from_pretrained(base).eval()
    tokens = torch.tensor([[1, 300, 200, 100, 50]])
    with torch.no_grad():
        a, b = merged(tokens).logits, original(tokens).logits
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


@pytest.mark.slow
def test_lora_two_ranks_equal_one_process(tmp_path):
    """2 ranks x 2 pairs == 1 process x 4 pairs, with the reference recomputed every step."""
    short = {"epochs": 1, "optimizer.lr": 1e-3}
    run_recipe(*LORA_SD, settings(tmp_path / "one", **short))
    run_distributed(2, *LORA, settings(tmp_path / "two", **short, batch_size=2))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for s in one:
        for key in ("loss", "rewards/margins", "rewards/chosen", "logps/rejected", "logits/chosen"):
            assert close(one[s][key], two[s][key]), (s, key, one[s][key], two[s][key])
    assert_trained_alike(torch.load(tmp_path / "one" / "adapter_0.pt", weights_only=True),
                         torch.load(tmp_path / "two" / "adapter_0.pt", weights_only=True), {})


@pytest.mark.slow
def test_full_dpo_two_ranks_equal_one_process_with_cached_reference(tmp_path):
    """Full DPO: 2 ranks x 2 pairs with reference log-probabilities cached at start-up ==
    1 process x 4 pairs with the frozen reference model run every step."""
    short = {"epochs": 1, "optimizer.lr": 1e-4}
    run_distributed(1, *FULL, settings(tmp_path / "one", **short))
    run_distributed(2, *FULL, settings(tmp_path / "two", **short, batch_size=2, cache_reference_log_probs=True))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for s in one:
        for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen"):
            assert close(one[s][key], two[s][key]), (s, key, one[s][key], two[s][key])
    from torchtune.models.llama2._convert_weights import meta_to_tune

    assert_trained_alike(
        meta_to_tune(torch.load(tmp_path / "one" / "meta_model_0.pt", weights_only=True)),
        meta_to_tune(torch.load(tmp_path / "two" / "meta_model_0.pt", weights_only=True)),
        meta_to_tune(torch.load(STORIES / "consolidated.00.pth", weights_only=True)),
    )


def test_reference_model_is_never_replaced_by_the_policys_saves(tmp_path):
    """Full DPO reading its reference from the policy's output_dir (say, where an SFT run
    left meta_model_0.pt): the policy's first save would replace it. Refused at setup."""
    out = tmp_path / "out"
    out.mkdir()
    sft = (STORIES / "consolidated.00.pth").read_bytes()
    (out / "meta_model_0.pt").write_bytes(sft)
    (out / "params.json").write_bytes((STORIES / "params.json").read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "--standalone", "--nproc_per_node", "1",
         FULL[0], "--config", FULL[1], *settings(out, epochs=1), f"ref_checkpointer.checkpoint_dir={out}",
         "ref_checkpointer.checkpoint_files=[meta_model_0.pt]",
         f"ref_checkpointer.output_dir={tmp_path / 'elsewhere'}"],  # its own guard looks there
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("error: This run would overwrite")]
    assert f"replaces {out / 'meta_model_0.pt'}, which is input file {out / 'meta_model_0.pt'}" in line
    assert (out / "meta_model_0.pt").read_bytes() == sft
