"""End-to-end runs of the single-device recipes through `tune run`, on the bundled
stories260K model: determinism, accumulation, resume, checkpoint formats, bad loss."""

from typing import Optional

import pytest
import torch

from torchtune.training.metric_logging import DiskLogger

from recipe_helpers import (
    SLOW_STEPS,
    STORIES,
    alpaca_dataset_overrides,
    assert_state_dicts_equal,
    assert_trained_alike,
    common_overrides,
    copy_meta_checkpoint,
    kill_when,
    load_meta,
    losses,
    run_recipe,
    start_recipe,
    write_hf_checkpoint,
)

FULL = ("full_finetune_single_device", "stories260K/full_single_device")
LORA = ("lora_finetune_single_device", "stories260K/lora_single_device")
LORA_EXTRA = {"sample_prompt": "null", "model.lora_dropout": 0.1}  # dropout makes RNG matter


def overrides_for(recipe, output_dir, **extra):
    if recipe == LORA:
        extra = {**LORA_EXTRA, **extra}
    return common_overrides(output_dir, **extra)


def test_loss_falls_on_real_alpaca(tmp_path):
    """40 steps over the same 32 real records (5 epochs): the epoch-mean loss must fall."""
    out = tmp_path / "run"
    run_recipe(*FULL, overrides_for(FULL, out, epochs=5, max_steps_per_epoch="null", batch_size=4, **{
        "optimizer.lr": 3e-3, "lr_scheduler.num_warmup_steps": 3, "dataset.split": "train[:32]",
    }) + alpaca_dataset_overrides())
    loss = losses(out)
    assert sorted(loss) == list(range(1, 41))
    first = sum(loss[s] for s in range(1, 9)) / 8
    last = sum(loss[s] for s in range(33, 41)) / 8
    assert last < 0.8 * first, (first, last)


# Keys the recipes give defaults to: configs written elsewhere leave them out.
DEFAULTED = {FULL: ["validation_dataset", "validate_every_n_steps"],
             LORA: ["validation_dataset", "validate_every_n_steps", "sample_prompt", "sample_max_new_tokens"]}


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """Runs that several tests compare against, made once on first use: ``"lora"`` (the
    LoRA config as overrides_for gives it) and ``"full_alpaca"`` (the full config, batch 4
    of alpaca: the shipped fused loss, fused AdamW and optimizer_in_bwd)."""
    root, made = tmp_path_factory.mktemp("shared"), {}
    argv = {
        "lora": lambda out: (LORA, overrides_for(LORA, out)),
        "full_alpaca": lambda out: (FULL, overrides_for(FULL, out, batch_size=4) + alpaca_dataset_overrides()),
    }

    def get(name):
        if name not in made:
            recipe, overrides = argv[name](root / name)
            run_recipe(*recipe, overrides)
            made[name] = root / name
        return made[name]

    return get


@pytest.mark.parametrize("recipe", [FULL, LORA], ids=["full", "lora"])
def test_same_seed_same_losses(tmp_path, recipe, shared_runs):
    """Also: a config that leaves out the keys with defaults trains the same."""
    a, b = tmp_path / "a", tmp_path / "b"
    if recipe == LORA:
        a = shared_runs("lora")
    else:
        run_recipe(*recipe, overrides_for(recipe, a))
    run_recipe(*recipe, overrides_for(recipe, b) + [f"~{k}" for k in DEFAULTED[recipe]])
    assert losses(a) == losses(b) and len(losses(a)) == 4
    c = tmp_path / "c"
    run_recipe(*recipe, overrides_for(recipe, c, seed=99))
    assert losses(c) != losses(a)


def assert_runs_agree(a, b, loss_tol: float, weight_tol: Optional[float] = None) -> None:
    """Two 4-step runs: the same steps, losses within ``loss_tol``, final weights within
    ``weight_tol``, or (None: runs that differ in fp32 summation order) trained alike."""
    la, lb = losses(a), losses(b)
    assert la.keys() == lb.keys() and len(la) == 4
    for step in la:
        assert abs(la[step] - lb[step]) < loss_tol, (step, la[step], lb[step])
    name = "meta_model_0.pt"
    if weight_tol is None:
        assert_trained_alike(load_meta(a / name), load_meta(b / name), load_meta(STORIES / "consolidated.00.pth"))
    else:
        assert_state_dicts_equal(load_meta(a / name), load_meta(b / name), atol=weight_tol)


def test_gradient_accumulation_equals_bigger_batch(tmp_path):
    """Batch 4 x 1 step == batch 2 x 2 accumulation steps: the loss is normalised by the
    target tokens of the whole window (padding differs between the two: it must not matter).
    Accumulating means one optimizer step after several backward passes, with clipping
    over the whole window's gradients: the shipped optimizer_in_bwd is turned off."""
    big, accum = tmp_path / "big", tmp_path / "accum"
    plain_step = {"optimizer_in_bwd": False, "clip_grad_norm": 1.0}
    run_recipe(*FULL, overrides_for(FULL, big, batch_size=4, gradient_accumulation_steps=1, **plain_step)
               + alpaca_dataset_overrides())
    run_recipe(*FULL, overrides_for(FULL, accum, batch_size=2, gradient_accumulation_steps=2, **plain_step)
               + alpaca_dataset_overrides())
    assert_runs_agree(big, accum, loss_tol=1e-5)


def resume_overrides(recipe, run_dir, base_dir, epoch):
    """Point the checkpointer at what an interrupted run left behind."""
    if recipe == FULL:
        ckpt = [f"checkpointer.checkpoint_dir={run_dir}", f"checkpointer.checkpoint_files=[meta_model_{epoch}.pt]"]
    else:  # LoRA keeps reading the base model; the adapter holds the training
        ckpt = [
            f"checkpointer.checkpoint_dir={run_dir}",
            f"checkpointer.checkpoint_files=[{base_dir}/consolidated.00.pth]",
            f"checkpointer.adapter_checkpoint=adapter_{epoch}.pt",
        ]
    return ckpt + ["checkpointer.recipe_checkpoint=recipe_state.pt", "resume_from_checkpoint=True"]


@pytest.mark.parametrize("recipe", [FULL, LORA], ids=["full", "lora"])
def test_resume_after_epoch_is_bit_exact(tmp_path, recipe):
    """2 epochs straight == the first epoch's checkpoint resumed for the second epoch."""
    base = tmp_path / "base"
    copy_meta_checkpoint(base)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ckpt = [f"checkpointer.checkpoint_dir={base}"]
    run_recipe(*recipe, overrides_for(recipe, straight, epochs=2) + ckpt)
    assert (straight / "recipe_state.pt").exists()
    state = torch.load(straight / "recipe_state.pt", weights_only=True)
    assert state["epochs_run"] == 1 and state["total_epochs"] == 2

    run_recipe(*recipe, overrides_for(recipe, resumed, epochs=2)
               + resume_overrides(recipe, straight, base, epoch=0))
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == [5, 6, 7, 8]
    assert all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit
    assert_state_dicts_equal(load_meta(straight / "meta_model_1.pt"), load_meta(resumed / "meta_model_1.pt"))
    if recipe == LORA:
        assert_state_dicts_equal(
            torch.load(straight / "adapter_1.pt", weights_only=True),
            torch.load(resumed / "adapter_1.pt", weights_only=True),
        )


def test_resume_with_contradicting_config_names_both_values(tmp_path):
    base, run = tmp_path / "base", tmp_path / "run"
    copy_meta_checkpoint(base)
    run_recipe(*FULL, overrides_for(FULL, run, epochs=2, **{"checkpointer.checkpoint_dir": base}))
    out = run_recipe(*FULL, overrides_for(FULL, tmp_path / "r", epochs=2, seed=7)
                     + resume_overrides(FULL, run, base, epoch=0), expect_ok=False)
    assert out.returncode != 0
    assert "seed=7" in out.stderr and "seed=1234" in out.stderr


@pytest.mark.parametrize("recipe,fmt", [(FULL, "meta"), (LORA, "hf")], ids=["full-meta", "lora-hf"])
def test_killed_mid_epoch_resumes_exactly(tmp_path, recipe, fmt):
    """SIGKILL a run after a step checkpoint; resuming from it gives the uninterrupted result."""
    base = tmp_path / "base"
    if fmt == "meta":
        copy_meta_checkpoint(base)
        ckpt = [f"checkpointer.checkpoint_dir={base}"]
    else:
        names = write_hf_checkpoint(base, shards=2)
        ckpt = [
            "checkpointer._component_=torchtune.utils.FullModelHFCheckpointer",
            f"checkpointer.checkpoint_dir={base}",
            f"checkpointer.checkpoint_files=[{','.join(names)}]",
        ]
    settings = dict(max_steps_per_epoch=8, save_every_n_steps=2)
    straight = tmp_path / "straight"
    run_recipe(*recipe, overrides_for(recipe, straight, **settings) + ckpt)

    # The same run, slowed by a validation pass per step (it changes no training state),
    # killed once its step-4 checkpoint is in place.
    killed = tmp_path / "killed"
    proc = start_recipe(*recipe, overrides_for(recipe, killed, **settings) + ckpt + SLOW_STEPS)
    kill_when(proc, killed / "step_4" / "recipe_state.pt")
    last = max(killed.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    step = int(last.name.split("_")[1])
    assert 4 <= step < 8 and not (killed / "epoch_0").exists() and not (killed / "meta_model_0.pt").exists()

    # Resume from the step folder: a full fine-tune reads the model written there; LoRA keeps
    # reading the base model and takes the adapter from the step folder.
    resume = [f"checkpointer.checkpoint_dir={last}", "checkpointer.recipe_checkpoint=recipe_state.pt",
              "resume_from_checkpoint=True"]
    if recipe == FULL:
        resume.append("checkpointer.checkpoint_files=[meta_model_0.pt]")
    else:
        resume += [f"checkpointer.checkpoint_files=[{','.join(str(base / n) for n in names)}]",
                   "checkpointer.adapter_checkpoint=adapter_0.pt"]
    resumed = tmp_path / "resumed"
    run_recipe(*recipe, overrides_for(recipe, resumed, **settings) + ckpt + resume)
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == list(range(step + 1, 9))
    assert all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit
    if fmt == "meta":
        assert_state_dicts_equal(load_meta(straight / "meta_model_0.pt"), load_meta(resumed / "meta_model_0.pt"))
        # torchtune 0.6.1's form: resume_from_checkpoint alone, in the interrupted run's own
        # folder, resumes its newest save (the model written in that step folder).
        run_recipe(*recipe, overrides_for(recipe, killed, **settings) + ckpt + ["resume_from_checkpoint=True"])
        assert_state_dicts_equal(load_meta(straight / "meta_model_0.pt"), load_meta(killed / "meta_model_0.pt"))
        lk = losses(killed)
        assert all(lk[s] == ls[s] for s in range(step + 1, 9)), (ls, lk)
    else:
        for name in names:  # the merged model, in the input's shards
            assert_state_dicts_equal(torch.load(straight / "epoch_0" / name, weights_only=True),
                                     torch.load(resumed / "epoch_0" / name, weights_only=True))
        assert_state_dicts_equal(torch.load(straight / "adapter_0.pt", weights_only=True),
                                 torch.load(resumed / "adapter_0.pt", weights_only=True))


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_recipe(*FULL, overrides_for(FULL, out, save_every_n_steps=1, **{
        "optimizer.lr": ".inf", "lr_scheduler": "null", "clip_grad_norm": "null",
    }), expect_ok=False)
    assert result.returncode != 0
    assert "loss is nan" in result.stderr.lower()
    assert (out / "step_1" / "recipe_state.pt").exists()
    assert not (out / "step_2").exists() and not (out / "meta_model_0.pt").exists()
    step1 = load_meta(out / "step_1" / "meta_model_0.pt")
    assert set(step1) == set(load_meta(STORIES / "consolidated.00.pth"))


def test_activation_checkpointing_and_validation_change_no_training_numbers(tmp_path, shared_runs):
    plain, options = shared_runs("lora"), tmp_path / "options"
    run_recipe(*LORA, overrides_for(LORA, options, enable_activation_checkpointing=True, validate_every_n_steps=2)
               + ["validation_dataset={_component_: torchtune.datasets.text_completion_dataset, source: text, "
                  "data_files: torchtune/assets/tinyshakespeare.txt, sample_by: paragraph, max_seq_len: 64, packed: True, "
                  "split: 'train[:40]'}"])
    assert losses(plain) == losses(options)
    records = DiskLogger.read(options / "logs" / "log.jsonl")
    val = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    assert sorted(val) == [2, 4] and all(0 < v < 10 for v in val.values())
    assert all("num_tokens" in r for r in records if "loss" in r)


def test_bf16_run(tmp_path):
    out = tmp_path / "run"
    run_recipe(*FULL, overrides_for(FULL, out, dtype="bf16", log_peak_memory_stats=True))
    records = DiskLogger.read(out / "logs" / "log.jsonl")
    assert len(records) == 4 and all(0 < r["loss"] < 10 for r in records)
    assert all(r["peak_memory_rss"] > 0 for r in records)
    saved = load_meta(out / "meta_model_0.pt")
    assert all(v.dtype == torch.bfloat16 for v in saved.values())


@pytest.mark.parametrize("recipe", [FULL, LORA])
def test_fused_output_loss_trains_like_logits_and_chunked_loss(tmp_path, recipe, shared_runs):
    """The shipped LinearCrossEntropyLoss (the output projection inside the loss, only on
    target positions) and fused AdamW train as ChunkedCrossEntropyLoss on full logits and
    the per-tensor AdamW do, on padding-free alpaca batches (prompt masked)."""
    fused, plain = tmp_path / "fused", tmp_path / "plain"
    if recipe == FULL:
        fused = shared_runs("full_alpaca")
    else:
        run_recipe(*recipe, overrides_for(recipe, fused, batch_size=4) + alpaca_dataset_overrides())
    run_recipe(*recipe, overrides_for(recipe, plain, batch_size=4) + alpaca_dataset_overrides()
               + ["loss._component_=torchtune.modules.loss.ChunkedCrossEntropyLoss",
                  "optimizer.fused=False"])
    # 3e-5 on the weights: the two losses round differently (softmax as exp(x - max) / sum
    # vs log-softmax), and AdamW's normalised step turns a 1e-7 gradient difference on a
    # near-zero gradient into a visible one after 4 steps.
    assert_runs_agree(fused, plain, loss_tol=1e-5, weight_tol=3e-5)


def test_optimizer_in_backward_trains_like_a_step_after_backward(tmp_path, shared_runs):
    """The shipped optimizer_in_bwd (each parameter stepped inside backward, its gradient
    dropped) gives the losses and weights of one fused AdamW step after backward. The same
    arithmetic, but the fused kernel vectorises a list of tensors and one tensor apart
    (another split into vector lanes and tail, so other roundings on another CPU): the
    runs agree as runs differing in fp32 rounding do (losses, a sum over ~500 tokens, to
    1e-5; weights by ``assert_trained_alike``)."""
    in_bwd, after = shared_runs("full_alpaca"), tmp_path / "after"
    run_recipe(*FULL, overrides_for(FULL, after, batch_size=4, optimizer_in_bwd=False)
               + alpaca_dataset_overrides())
    assert_runs_agree(in_bwd, after, loss_tol=1e-5)


def test_optimizer_in_backward_refuses_clipping_and_accumulation_in_one_line_each(tmp_path):
    out = run_recipe(*FULL, overrides_for(FULL, tmp_path / "run", clip_grad_norm=1.0,
                                          gradient_accumulation_steps=2), expect_ok=False)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert lines == [
        "error: optimizer_in_bwd: True steps each parameter before the global gradient norm "
        "exists; set clip_grad_norm: null (it is 1.0) or optimizer_in_bwd: False",
        "error: optimizer_in_bwd: True steps during every backward, so it cannot accumulate "
        "gradients; set gradient_accumulation_steps: 1 (it is 2) or optimizer_in_bwd: False",
    ]


def test_resume_across_optimizer_in_backward_settings_names_both_values(tmp_path):
    """The two settings save the optimizer state differently (one state per parameter vs
    one optimizer): resuming with the other setting stops with both values named."""
    base, run = tmp_path / "base", tmp_path / "run"
    copy_meta_checkpoint(base)
    run_recipe(*FULL, overrides_for(FULL, run, epochs=2, **{"checkpointer.checkpoint_dir": base}))
    out = run_recipe(*FULL, overrides_for(FULL, tmp_path / "r", epochs=2, optimizer_in_bwd=False)
                     + resume_overrides(FULL, run, base, epoch=0), expect_ok=False)
    assert out.returncode != 0
    assert "optimizer_in_bwd=False" in out.stderr and "optimizer_in_bwd=True" in out.stderr
