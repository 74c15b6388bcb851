"""The hf/* configs fine-tune a model folder that is no named release with ``model_dir=`` as
the only model setting: a Llama-architecture model with rope theta 100,000, GQA 3:1, a tied
output, a BPE ``tokenizer.json`` with a ChatML template and no ``tokenizer.model``.

The other settings below only make the run small and offline (a local dataset, 4 steps,
fp32 on CPU). A killed run resumes bit for bit; the output beside the folder is a model
folder transformers loads with the same logits, and generation runs from it. For every
implemented architecture, llama.cpp's ``convert_hf_to_gguf.py`` converts the output, and
the GGUF file, read back by transformers' GGUF loader, gives the output's logits.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import llama_cpp
from hf_folders import ROWS, write_folder
from recipe_helpers import ALPACA, assert_trained_alike, kill_when, losses, REPO, run_launched, run_recipe, start_recipe
from torchtune.models import auto_model
from torchtune.training.metric_logging import DiskLogger
from torchtune.utils import FullModelHFCheckpointer

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

STEPS, EVERY = 4, 2


def small(**extra):
    settings = {
        "dataset._component_": "torchtune.datasets.alpaca_dataset", "dataset.source": "json",
        "dataset.data_files": str(ALPACA), "dataset.split": "train[:16]", "dataset.max_seq_len": 96,
        "batch_size": 2, "gradient_accumulation_steps": 1, "max_steps_per_epoch": STEPS,
        "save_every_n_steps": EVERY, "device": "cpu", "dtype": "fp32",
        "enable_activation_checkpointing": False, "metric_logger.filename": "log.jsonl",
        "log_peak_memory_stats": False, "seed": 7,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    write_folder(ROWS["llama"], folder)
    assert not (folder / "tokenizer.model").exists()
    return folder


def _resume_exactly(recipe, config, model_dir, tmp_path, extra):
    """Straight run into the default output beside the folder, a run killed after its first
    save, and its resumption; returns the straight run's output folder."""
    straight = model_dir.parent / f"{model_dir.name}-{config.split('/')[1].split('_')[0]}"
    run_recipe(recipe, config, [f"model_dir={model_dir}", *small(**extra)])
    assert (straight / "epoch_0").is_dir(), "the output goes beside the model folder, named after it"

    killed = tmp_path / "killed"
    proc = start_recipe(recipe, config, [f"model_dir={model_dir}", f"output_dir={killed}", *small(**extra)])
    kill_when(proc, killed / f"step_{EVERY}" / "recipe_state.pt")
    run_recipe(recipe, config, [f"model_dir={model_dir}", f"output_dir={killed}", "resume_from_checkpoint=True", *small(**extra)])
    ls, lr = losses(straight), losses(killed)
    steps = [r["step"] for r in DiskLogger.read(killed / "logs" / "log.jsonl") if "loss" in r]
    assert steps.count(1) == 1 and steps[-2:] == [EVERY + 1, STEPS], steps  # resumed, not restarted
    assert set(ls) == set(range(1, STEPS + 1))
    assert all(lr[s] == ls[s] for s in range(EVERY + 1, STEPS + 1)), (ls, lr)  # bit for bit
    a = safetensors_torch.load_file(str(straight / "epoch_0" / "model.safetensors"))
    b = safetensors_torch.load_file(str(killed / "epoch_0" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return straight


def _transformers_reads(output, original):
    hf = transformers.LlamaForCausalLM.from_pretrained(output).float().eval()
    assert hf.config.tie_word_embeddings and hf.config.rope_parameters["rope_theta"] == 100_000.0
    ckpt = FullModelHFCheckpointer(str(output), output_dir=str(output.parent / "unused"))
    ours = auto_model(str(output))
    ours.load_state_dict(ckpt.load_checkpoint()["model"])
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(tokens), hf(tokens).logits, atol=1e-5, rtol=0)
    trained = safetensors_torch.load_file(str(output / "model.safetensors"))
    before = safetensors_torch.load_file(str(original / "model.safetensors"))
    assert any(not torch.equal(trained[k], before[k]) for k in before), "training changed nothing"


def test_hf_lora_single_device_from_model_dir(model_dir, tmp_path):
    out = _resume_exactly("lora_finetune_single_device", "hf/lora_single_device", model_dir, tmp_path, {})
    _transformers_reads(out / "epoch_0", model_dir)
    assert json.loads((out / "adapter_0_peft" / "adapter_config.json").read_text())["r"] == 8
    # The merged output is a model folder: generation runs from it with the model's chat format.
    gen = run_recipe("generate", "hf/generation", [
        f"model_dir={out / 'epoch_0'}", "device=cpu", "dtype=fp32", "max_new_tokens=8",
        "temperature=0", "model.max_seq_len=256"])
    assert gen.returncode == 0


def test_hf_full_single_device_from_model_dir(model_dir, tmp_path):
    out = _resume_exactly("full_finetune_single_device", "hf/full_single_device", model_dir, tmp_path,
                          {"optimizer_in_bwd": False})
    _transformers_reads(out / "epoch_0", model_dir)


def test_hf_lora_dpo_single_device_on_a_mixture_of_experts(tmp_path):
    """hf/lora_dpo_single_device on a tiny Qwen 3 MoE folder: preference pairs rendered
    with the folder's ChatML template; adapters on attention, the routers and every expert;
    the frozen base with all of them off is the reference, so the first step's reward
    margin is exactly 0; the load-balancing and z-losses are added and logged as aux_loss;
    transformers reads the merged output with our logits."""
    folder = tmp_path / "tiny-qwen3-moe"
    write_folder(ROWS["qwen3-moe-sparse"], folder)
    pairs = REPO / "torchtune" / "assets" / "dpo_en_demo_subset.json"
    out = tmp_path / "dpo"
    run_recipe("lora_dpo_single_device", "hf/lora_dpo_single_device", [
        f"model_dir={folder}", f"output_dir={out}", "dataset._component_=torchtune.datasets.preference_dataset",
        "dataset.source=json", f"dataset.data_files={pairs}", "dataset.split=train[:16]",
        "dataset.max_seq_len=256", "batch_size=2", "gradient_accumulation_steps=1",
        "max_steps_per_epoch=3", "lr_scheduler.num_warmup_steps=0", "device=cpu", "dtype=fp32",
        "enable_activation_checkpointing=False", "metric_logger.filename=log.jsonl",
        "log_peak_memory_stats=False", "seed=7", "model.apply_lora_to_mlp=True", "router_z_loss_coef=0.001",
    ])
    records = [r for r in DiskLogger.read(out / "logs" / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0]["rewards/margins"] == 0.0
    assert any(r["rewards/margins"] != 0.0 for r in records[1:]), "the policy never moved"
    assert all(r["aux_loss"] > 0 for r in records), records
    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "epoch_0").float().eval()
    ours = auto_model(str(out / "epoch_0"))
    ours.load_state_dict(FullModelHFCheckpointer(str(out / "epoch_0"), output_dir=str(tmp_path / "unused")).load_checkpoint()["model"])
    tokens = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(tokens), hf(tokens).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_hf_distributed_from_model_dir(method, model_dir, tmp_path):
    """hf/lora and hf/full on 2 processes (gloo) x batch 2 train what one process with batch
    4 trains (the fused loss projects the tied output outside the model's forward, so the
    root FSDP unit must stay gathered until backward); the output, written by rank 0, is
    the input's format and transformers reads it with our logits."""
    one, two = tmp_path / "one", tmp_path / method
    # No LoRA dropout: its masks depend on how the batch is split across ranks.
    single_extra = {"optimizer_in_bwd": False} if method == "full" else {"model.lora_dropout": 0.0}
    run_recipe(f"{method}_finetune_single_device", f"hf/{method}_single_device", [
        f"model_dir={model_dir}", f"output_dir={one}",
        *small(batch_size=4, max_steps_per_epoch=2, save_every_n_steps=2, **single_extra)])
    extra = {"optimizer.fused": False} if method == "full" else {"model.lora_dropout": 0.0}
    cmd = [sys.executable, "-m", "torchtune._cli.tune", "run", "--standalone", "--nproc_per_node", "2",
           f"{method}_finetune_distributed", "--config", f"hf/{method}", f"model_dir={model_dir}",
           f"output_dir={two}", *small(max_steps_per_epoch=2, save_every_n_steps=2, **extra)]
    done = run_launched(cmd, dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2]
    assert all(abs(a[s] - b[s]) < 1e-5 * max(1.0, abs(a[s])) for s in a), (a, b)
    start = safetensors_torch.load_file(str(model_dir / "model.safetensors"))
    assert_trained_alike(safetensors_torch.load_file(str(one / "epoch_0" / "model.safetensors")),
                         safetensors_torch.load_file(str(two / "epoch_0" / "model.safetensors")), start)
    _transformers_reads(two / "epoch_0", model_dir)


def test_model_dir_is_required():
    out = run_recipe("lora_finetune_single_device", "hf/lora_single_device", [], expect_ok=False)
    assert out.returncode == 1 and "model_dir" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def gguf_converter():
    try:
        return llama_cpp.converter()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"llama.cpp's converter unavailable (package index unreachable?): {e}")


@pytest.mark.parametrize("arch,recipe,resume", [
    # Resumption is checked where a family's layout is new to it (the LoRA adapter's key
    # maps, Gemma's architecture); a full fine-tune's resumption is the recipe's, checked on
    # the BPE folder above and on Gemma. Llama's LoRA resumes above; Qwen 2's full
    # fine-tune and Qwen 3's LoRA in test_qwen_recipes.py.
    ("llama-nf4", "qlora", False),
    ("qwen2", "lora", True), ("qwen3", "lora", False), ("qwen3", "full", False),
    ("mistral", "lora", True), ("mistral", "full", False), ("phi3", "lora", True), ("phi3", "full", False),
    ("gemma2", "lora", True), ("gemma2", "full", True), ("gemma3", "lora", True), ("gemma3", "full", True),
])
def test_hf_output_converts_to_gguf(arch, recipe, resume, gguf_converter, tmp_path):
    """Every architecture, fine-tuned with model_dir= alone (a killed run resuming bit for
    bit), writes an output llama.cpp converts. The folders have a SentencePiece tokenizer:
    llama.cpp reads any, but a BPE tokenizer.json only for the models on its list."""
    gguf = pytest.importorskip("gguf")
    folder = tmp_path / f"tiny-{arch}"
    write_folder(ROWS[arch], folder, tokenizer="sentencepiece")
    config = f"hf/{recipe}_single_device"
    extra = {"optimizer_in_bwd": False} if recipe == "full" else {}
    script = "full_finetune_single_device" if recipe == "full" else "lora_finetune_single_device"
    if resume:
        _resume_exactly(script, config, folder, tmp_path, extra)
    else:
        run_recipe(script, config, [
            f"model_dir={folder}", *small(max_steps_per_epoch=2, save_every_n_steps=2, **extra)])
    out = tmp_path / f"tiny-{arch}-{recipe}" / "epoch_0"
    done = llama_cpp.convert(out, tmp_path / "model.gguf")
    assert done.returncode == 0, done.stderr[-3000:]

    hf = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    fields = {name: f.contents() for name, f in reader.fields.items()}
    prefix = fields["general.architecture"]
    assert prefix == {"llama-nf4": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "llama", "phi3": "phi3",
                      "gemma2": "gemma2", "gemma3": "gemma3"}[arch]
    c = hf.config
    rope = c.rope_parameters.get("full_attention", c.rope_parameters)  # Gemma 3: per layer type
    # llama.cpp writes the base only where it is not its default of 10,000.
    assert fields.get(f"{prefix}.rope.freq_base", 10_000.0) == rope["rope_theta"]
    assert fields[f"{prefix}.attention.head_count"] == c.num_attention_heads
    assert fields[f"{prefix}.attention.head_count_kv"] == c.num_key_value_heads
    default_head_dim = c.hidden_size // c.num_attention_heads  # written only when it differs
    head_dim = getattr(c, "head_dim", None) or default_head_dim
    assert fields.get(f"{prefix}.attention.key_length", default_head_dim) == head_dim
    assert fields[f"{prefix}.attention.layer_norm_rms_epsilon"] == pytest.approx(c.rms_norm_eps)
    assert ("output.weight" not in {t.name for t in reader.tensors}) == c.tie_word_embeddings
    # transformers' GGUF loader undoes llama.cpp's q/k permutation; with the folder's config
    # (its loader does not read Qwen 3's key_length), the weights give the same logits. It
    # reads a Mistral GGUF (architecture "llama") as Llama, so no config there: 16 tokens
    # fit the tiny Mistral's 16-token window, where the two models agree.
    config = {} if arch == "mistral" else {"config": c}
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="model.gguf", dtype=torch.float32, **config).eval()
    tokens = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, hf(tokens).logits, atol=0, rtol=0)
    trained = safetensors_torch.load_file(str(out / "model.safetensors"))
    before = safetensors_torch.load_file(str(folder / "model.safetensors"))
    assert any(not torch.equal(trained[k], before[k]) for k in before), "training changed nothing"
    if recipe == "lora":  # the adapter, in peft over the input folder, is the merged output
        from peft import PeftModel

        base = transformers.AutoModelForCausalLM.from_pretrained(folder).float()
        adapted = PeftModel.from_pretrained(base, str(out.parent / "adapter_0_peft")).eval()
        with torch.no_grad():
            torch.testing.assert_close(adapted(tokens).logits, hf(tokens).logits, atol=1e-5, rtol=0)



@pytest.mark.parametrize("recipe", ["lora", "full"])
def test_hf_mixture_of_experts_resumes_and_loads_in_transformers(recipe, tmp_path):
    """A tiny Qwen 3 MoE folder (8 experts, 2 per token, every layer a mixture) through
    hf/*: the load-balancing loss is added and logged, a killed run resumes bit for bit,
    transformers loads the output (per-expert tensors) with our logits, and the LoRA
    adapter (routers and experts adapted) loads in peft. (llama.cpp's converter reads Qwen 3 MoE only with a BPE
    tokenizer on its list, which no test folder has.)"""
    folder = tmp_path / "tiny-qwen3-moe"
    write_folder(ROWS["qwen3-moe-sparse"], folder, tokenizer="sentencepiece")
    # LoRA: attention, the routers (the default) and every expert (stacked adapters).
    extra = {"optimizer_in_bwd": False} if recipe == "full" else {"model.apply_lora_to_mlp": True}
    script = "full_finetune_single_device" if recipe == "full" else "lora_finetune_single_device"
    straight = _resume_exactly(script, f"hf/{recipe}_single_device", folder, tmp_path, extra)
    records = [r for r in DiskLogger.read(straight / "logs" / "log.jsonl") if "loss" in r]
    assert all(r["aux_loss"] > 0 for r in records), records
    out = straight / "epoch_0"
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    ckpt = FullModelHFCheckpointer(str(out), output_dir=str(tmp_path / "unused"))
    ours = auto_model(str(out))
    ours.load_state_dict(ckpt.load_checkpoint()["model"])
    tokens = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(tokens), hf(tokens).logits, atol=1e-5, rtol=0)
    if recipe == "lora":
        from peft import PeftModel

        base = transformers.AutoModelForCausalLM.from_pretrained(folder).float()
        adapted = PeftModel.from_pretrained(base, str(straight / "adapter_0_peft")).eval()
        with torch.no_grad():
            torch.testing.assert_close(adapted(tokens).logits, hf(tokens).logits, atol=1e-5, rtol=0)


def test_hf_mixture_of_experts_two_ranks_equal_one_process(tmp_path):
    """hf/full on 2 gloo processes x batch 2 trains what one process with batch 4 trains,
    on the tiny Qwen 3 MoE folder: FSDP2 shards the stacked experts like any parameter.
    Each rank adds the load-balancing loss of its own tokens, as transformers computes it
    per forward; with the coefficient 0.001 the split's effect on it is below the 1e-5
    the step losses are held to, and the trained weights are alike."""
    folder = tmp_path / "tiny-qwen3-moe"
    write_folder(ROWS["qwen3-moe-sparse"], folder, tokenizer="sentencepiece")
    one, two = tmp_path / "one", tmp_path / "two"
    run_recipe("full_finetune_single_device", "hf/full_single_device", [
        f"model_dir={folder}", f"output_dir={one}",
        *small(batch_size=4, max_steps_per_epoch=2, save_every_n_steps=2, optimizer_in_bwd=False)])
    cmd = [sys.executable, "-m", "torchtune._cli.tune", "run", "--standalone", "--nproc_per_node", "2",
           "full_finetune_distributed", "--config", "hf/full", f"model_dir={folder}",
           f"output_dir={two}", *small(max_steps_per_epoch=2, save_every_n_steps=2, **{"optimizer.fused": False})]
    done = run_launched(cmd, dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2]
    assert all(abs(a[s] - b[s]) < 1e-5 * max(1.0, abs(a[s])) for s in a), (a, b)
    start = safetensors_torch.load_file(str(folder / "model.safetensors"))
    assert_trained_alike(safetensors_torch.load_file(str(one / "epoch_0" / "model.safetensors")),
                         safetensors_torch.load_file(str(two / "epoch_0" / "model.safetensors")), start)


def test_hf_mixture_of_experts_output_converts_to_gguf(gguf_converter, tmp_path):
    """A tiny Qwen 3 MoE with the real Qwen 3 tokenizer (llama.cpp reads a Qwen 3 MoE only
    with a BPE tokenizer on its list), LoRA-tuned with its routers and experts adapted
    through hf/lora_single_device: llama.cpp converts the output (qwen3moe, the files'
    per-expert tensors stacked again as its ffn_*_exps tensors, the router as
    ffn_gate_inp). (transformers' GGUF loader would take 7 s more to read the 152k
    vocabulary back.)"""
    import shutil

    gguf = pytest.importorskip("gguf")
    tokenizers = REPO.parent / "shared" / "data" / "tokenizers" / "qwen3"
    if not (tokenizers / "tokenizer.json").is_file():
        pytest.skip(f"the real Qwen 3 tokenizer is not here ({tokenizers})")
    folder = tmp_path / "tiny-qwen3-moe"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizers / name, folder / name)
    ids = dict(bos_token_id=151643, eos_token_id=151645)
    config = transformers.Qwen3MoeConfig(
        vocab_size=151936, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_experts=8,
        num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        rope_theta=1_000_000.0, tie_word_embeddings=False, **ids)
    torch.manual_seed(0)
    model = transformers.Qwen3MoeForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(**ids)
    model.save_pretrained(folder)
    run_recipe("lora_finetune_single_device", "hf/lora_single_device", [
        f"model_dir={folder}", *small(max_steps_per_epoch=2, save_every_n_steps=2, **{"model.apply_lora_to_mlp": True})])
    out = tmp_path / "tiny-qwen3-moe-lora" / "epoch_0"
    done = llama_cpp.convert(out, tmp_path / "model.gguf")
    assert done.returncode == 0, done.stderr[-3000:]
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "qwen3moe"
    assert (fields["qwen3moe.expert_count"], fields["qwen3moe.expert_used_count"]) == (8, 2)
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    trained = safetensors_torch.load_file(str(out / "model.safetensors"))
    for ours, theirs in (("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
        stacked = torch.stack([trained[f"model.layers.1.mlp.experts.{e}.{ours}.weight"] for e in range(8)])
        assert torch.equal(tensors[f"blk.1.{theirs}.weight"].to(stacked.dtype).reshape(stacked.shape), stacked)
    router = trained["model.layers.0.mlp.gate.weight"]
    assert torch.equal(tensors["blk.0.ffn_gate_inp.weight"].to(router.dtype).reshape(router.shape), router)
