"""QLoRA and DoRA through `tune run lora_finetune_single_device` / `lora_finetune_distributed`
on a tiny random Llama 2 in HF format (stories260K's dims are too small for NF4 blocks:
every quantized weight here is 256 x 256, so even a half of it is a multiple of 16384
values). Two runs are made once: QDoRA (NF4 base + DoRA, which covers every QLoRA code path
and the magnitudes) and DoRA on the full-precision base. QDoRA resumes exactly after a kill
and runs on 2 gloo ranks like one process, and resumes there exactly; both merged outputs load in transformers with the
trained model's logits; the DoRA PEFT adapter loads in peft with the same logits. Together
about 40 s on 2 cores."""

import json
import os
import subprocess
import sys

import pytest
import torch

from recipe_helpers import (
    REPO,
    SLOW_STEPS,
    STORIES,
    assert_state_dicts_equal,
    assert_trained_alike,
    common_overrides,
    kill_when,
    losses,
    run_launched,
    run_recipe,
    start_recipe,
)

pytest.importorskip("torchao")
transformers = pytest.importorskip("transformers")

LORA_SD = ("lora_finetune_single_device", "stories260K/lora_single_device")
LORA_DIST = ("lora_finetune_distributed", "stories260K/lora_distributed")
DIMS = dict(vocab_size=512, num_layers=2, num_heads=4, num_kv_heads=4, embed_dim=256, intermediate_dim=256)
VARIANTS = {"qdora": {"model.quantize_base": True, "model.use_dora": True}, "dora": {"model.use_dora": True}}
# 4 steps of 4 samples, a step checkpoint every 2; dropout off (NF4 is the point here).
SETTINGS = {"batch_size": 4, "max_steps_per_epoch": 4, "save_every_n_steps": 2,
            "sample_prompt": "null", "optimizer.lr": 1e-3, "dataset.max_seq_len": 32}
WEIGHTS = "model.safetensors"


def _hf_config():
    return transformers.LlamaConfig(
        vocab_size=DIMS["vocab_size"], hidden_size=DIMS["embed_dim"], intermediate_size=DIMS["intermediate_dim"],
        num_hidden_layers=DIMS["num_layers"], num_attention_heads=DIMS["num_heads"],
        num_key_value_heads=DIMS["num_kv_heads"], max_position_embeddings=512, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random tiny Llama 2 saved by transformers (safetensors + config.json) and a tokenizer."""
    import shutil

    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(_hf_config()).save_pretrained(folder)
    shutil.copy(STORIES / "tokenizer.model", folder / "tokenizer.model")
    return folder


def _overrides(output_dir, base, variant, **extra):
    model = {f"model.{k}": v for k, v in DIMS.items()}
    ckpt = {
        "checkpointer._component_": "torchtune.training.FullModelHFCheckpointer",
        "checkpointer.checkpoint_dir": base,
        "checkpointer.checkpoint_files": f"[{WEIGHTS}]",
        "checkpointer.model_type": "LLAMA2",
    }
    return common_overrides(output_dir, **{**SETTINGS, **model, **VARIANTS[variant], **ckpt, **extra})


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory, base):
    root = tmp_path_factory.mktemp("straight")
    for variant in VARIANTS:
        run_recipe(*LORA_SD, _overrides(root / variant, base, variant))
    return root


def _trained_model(base, run_dir, variant):
    """Our adapted model: the base checkpoint, then the run's final adapter."""
    from safetensors.torch import load_file

    from torchtune.models.llama2 import lora_llama2
    from torchtune.models.llama2._convert_weights import hf_to_tune
    from torchtune.modules.peft import initialize_dora_magnitudes

    model = lora_llama2(
        ["q_proj", "k_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True, max_seq_len=512,
        lora_rank=8, lora_alpha=16, **DIMS, **{k.split(".")[1]: v for k, v in VARIANTS[variant].items()},
    )
    sd = hf_to_tune(load_file(base / WEIGHTS), num_heads=4, num_kv_heads=4, dim=256)
    model.load_state_dict(sd, strict=False)
    initialize_dora_magnitudes(model)
    model.load_state_dict(torch.load(run_dir / "adapter_0.pt", weights_only=True), strict=False)
    return model.eval()


TOKENS = torch.arange(3, 43).reshape(2, 20) * 7 % 500


@pytest.mark.slow
def test_killed_mid_epoch_resumes_exactly(tmp_path, base, straight_runs, variant="qdora"):
    """The NF4 base is quantized again from the input, identically; the adapter (with its
    magnitudes) and the recipe state come from the step folder."""
    straight = straight_runs / variant
    killed = tmp_path / "killed"
    proc = start_recipe(*LORA_SD, _overrides(killed, base, variant) + SLOW_STEPS)
    kill_when(proc, killed / "step_2" / "recipe_state.pt")
    assert not (killed / "epoch_0").exists()
    resumed = tmp_path / "resumed"
    run_recipe(*LORA_SD, _overrides(resumed, base, variant) + [
        f"checkpointer.checkpoint_dir={killed / 'step_2'}",
        f"checkpointer.checkpoint_files=[{base / WEIGHTS}]",
        "checkpointer.adapter_checkpoint=adapter_0.pt",
        "checkpointer.recipe_checkpoint=recipe_state.pt",
        "resume_from_checkpoint=True",
    ])
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == [3, 4] and all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit
    assert_state_dicts_equal(torch.load(straight / "adapter_0.pt", weights_only=True),
                             torch.load(resumed / "adapter_0.pt", weights_only=True))
    from safetensors.torch import load_file

    assert_state_dicts_equal(load_file(straight / "epoch_0" / WEIGHTS), load_file(resumed / "epoch_0" / WEIGHTS))


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merged_output_loads_in_transformers_with_the_trained_logits(base, straight_runs, variant):
    run = straight_runs / variant
    adapter = torch.load(run / "adapter_0.pt", weights_only=True)
    assert any(k.endswith(".magnitude") for k in adapter)
    with torch.no_grad():
        ours = _trained_model(base, run, variant)(TOKENS)
        hf = transformers.LlamaForCausalLM.from_pretrained(run / "epoch_0").eval()
        assert next(hf.parameters()).dtype == torch.float32  # the input's dtype
        theirs = hf(TOKENS).logits
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_dora_peft_adapter_loads_in_peft_with_the_trained_logits(base, straight_runs):
    peft = pytest.importorskip("peft")
    folder = straight_runs / "dora" / "adapter_0_peft"
    assert json.loads((folder / "adapter_config.json").read_text())["use_dora"] is True
    with torch.no_grad():
        ours = _trained_model(base, straight_runs / "dora", "dora")(TOKENS)
        hf = transformers.LlamaForCausalLM.from_pretrained(base)
        theirs = peft.PeftModel.from_pretrained(hf, folder).eval()(TOKENS).logits
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=1e-4)


def _run_two_ranks(overrides):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torchtune._cli.tune", "run", "--standalone", "--nproc_per_node", "2",
           LORA_DIST[0], "--config", LORA_DIST[1], *overrides]
    out = run_launched(cmd, env)
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.mark.slow
def test_qdora_two_gloo_ranks_equal_one_process_and_resume_exactly(tmp_path, base, straight_runs):
    """2 ranks x batch 2 == 1 process x batch 4 (the straight QDoRA run): FSDP2 shards the
    NF4 weights along dim 0. Losses within 1e-5, adapters and the merged model alike
    (``assert_trained_alike``): only the order of the cross-rank gradient sum differs. Resumed on 2 ranks from its step-2
    folder, the run then continues bit for bit (each rank quantizes its shard again from
    the input; the adapter shards and optimizer state come from the step folder)."""
    two = tmp_path / "two"
    _run_two_ranks(_overrides(two, base, "qdora", batch_size=2))
    single = straight_runs / "qdora"
    ls, lt = losses(single), losses(two)
    assert sorted(ls) == sorted(lt) == [1, 2, 3, 4]
    for step in ls:
        assert abs(ls[step] - lt[step]) < 1e-5, (step, ls[step], lt[step])
    assert_trained_alike(torch.load(single / "adapter_0.pt", weights_only=True),
                         torch.load(two / "adapter_0.pt", weights_only=True), {})
    from safetensors.torch import load_file

    assert_trained_alike(load_file(single / "epoch_0" / WEIGHTS), load_file(two / "epoch_0" / WEIGHTS),
                         load_file(base / WEIGHTS))

    resumed = tmp_path / "resumed"
    _run_two_ranks(_overrides(resumed, base, "qdora", batch_size=2) + [
        f"checkpointer.checkpoint_dir={two / 'step_2'}",
        f"checkpointer.checkpoint_files=[{base / WEIGHTS}]",
        "checkpointer.adapter_checkpoint=adapter_0.pt",
        "checkpointer.recipe_checkpoint=recipe_state.pt",
        "resume_from_checkpoint=True",
    ])
    lr = losses(resumed)
    assert sorted(lr) == [3, 4] and all(lr[s] == lt[s] for s in lr), (lt, lr)
    assert_state_dicts_equal(torch.load(two / "adapter_0.pt", weights_only=True),
                             torch.load(resumed / "adapter_0.pt", weights_only=True))
    assert_state_dicts_equal(load_file(two / "epoch_0" / WEIGHTS), load_file(resumed / "epoch_0" / WEIGHTS))
