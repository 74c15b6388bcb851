"""Llama 3.2 end to end: a tiny tied model (llama3 RoPE scaling factor 32) with the real
Llama 3 tokenizer, fine-tuned through `tune run` from the layouts transformers and Meta
ship, killed mid-epoch and resumed bit for bit, its outputs read back by transformers and
peft; greedy generation against transformers' ``generate``."""

import json

import pytest
import torch

from torchtune.generation import generate
from torchtune.models.llama2._convert_weights import hf_to_tune
from torchtune.models.llama3 import llama3_tokenizer
from torchtune.models.llama3._convert_weights import meta_to_tune
from torchtune.modules.peft import get_merged_lora_ckpt

from llama3_recipe_helpers import (
    TINY,
    hf_model,
    our_model,
    tune_state_dict,
    write_config,
    write_hf_folder,
    write_meta_folder,
    write_tokenizer,
)
from recipe_helpers import assert_state_dicts_equal, kill_when, losses, run_recipe, start_recipe

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ATOL = 1e-5
STEPS, EVERY, KILL_AT = 6, 2, 2


def settings(output_dir):
    return [f"output_dir={output_dir}", "metric_logger.filename=log.jsonl", "log_every_n_steps=1",
            "log_peak_memory_stats=False", "dataset.max_seq_len=128", "batch_size=2",
            f"max_steps_per_epoch={STEPS}", "lr_scheduler.num_warmup_steps=1",
            f"save_every_n_steps={EVERY}"]


# A validation pass per step (no training state changes) so the kill lands between checkpoints.
SLOW_STEPS = [
    "validation_dataset={_component_: torchtune.datasets.text_completion_dataset, source: text, "
    "data_files: torchtune/assets/tinyshakespeare.txt, sample_by: paragraph, max_seq_len: 128, packed: True, "
    "split: 'train[:60]'}",
    "validate_every_n_steps=1",
]


def kill_and_find_step(recipe, config, overrides, killed):
    proc = start_recipe(recipe, config, overrides + SLOW_STEPS)
    kill_when(proc, killed / f"step_{KILL_AT}" / "recipe_state.pt")
    last = max(killed.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    step = int(last.name.split("_")[1])
    assert KILL_AT <= step < STEPS and not (killed / "epoch_0").exists()
    return last, step


def test_full_finetune_from_hf_killed_resumed_and_read_by_transformers(tmp_path):
    base = tmp_path / "hf"
    _, names = write_hf_folder(base)
    config = write_config(tmp_path / "full.yaml", "full", base / "original" / "tokenizer.model")
    recipe = "full_finetune_single_device"
    ckpt = ["checkpointer._component_=torchtune.utils.FullModelHFCheckpointer",
            f"checkpointer.checkpoint_dir={base}", f"checkpointer.checkpoint_files=[{','.join(names)}]"]

    straight = tmp_path / "straight"
    run_recipe(recipe, config, settings(straight) + ckpt)
    killed = tmp_path / "killed"
    last, step = kill_and_find_step(recipe, config, settings(killed) + ckpt, killed)
    resumed = tmp_path / "resumed"
    run_recipe(recipe, config, settings(resumed) + [
        "checkpointer._component_=torchtune.utils.FullModelHFCheckpointer",
        f"checkpointer.checkpoint_dir={last}", f"checkpointer.checkpoint_files=[{','.join(names)}]",
        "checkpointer.recipe_checkpoint=recipe_state.pt", "resume_from_checkpoint=True"])
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == list(range(step + 1, STEPS + 1))
    assert all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit

    out_a, out_b = straight / "epoch_0", resumed / "epoch_0"
    weights = {}
    for name in names:
        a = safetensors_torch.load_file(str(out_a / name))
        b = safetensors_torch.load_file(str(out_b / name))
        assert_state_dicts_equal(a, b)
        weights.update(a)
    assert "lm_head.weight" not in weights  # tied: as transformers writes it
    assert {"config.json", "generation_config.json", "tokenizer_config.json",
            "special_tokens_map.json", "model.safetensors.index.json"} <= {p.name for p in out_a.iterdir()}

    hf = transformers.LlamaForCausalLM.from_pretrained(out_a, attn_implementation="eager").eval()
    assert hf.config.tie_word_embeddings and hf.lm_head.weight is hf.model.embed_tokens.weight
    ours = our_model(hf_to_tune(weights, TINY.n_h, TINY.n_kv, TINY.dim))
    tokens = torch.randint(0, TINY.vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=ATOL, rtol=0)
    # And training moved the weights.
    original = transformers.LlamaForCausalLM.from_pretrained(base).state_dict()
    assert not torch.equal(original["model.embed_tokens.weight"], weights["model.embed_tokens.weight"])


def test_lora_from_meta_killed_resumed_meta_layout_and_peft(tmp_path):
    base = tmp_path / "meta"
    hf = write_meta_folder(base)
    config = write_config(tmp_path / "lora.yaml", "lora", base / "tokenizer.model")
    recipe = "lora_finetune_single_device"
    ckpt = [f"checkpointer.checkpoint_dir={base}", "sample_prompt=null"]

    straight = tmp_path / "straight"
    run_recipe(recipe, config, settings(straight) + ckpt)
    killed = tmp_path / "killed"
    last, step = kill_and_find_step(recipe, config, settings(killed) + ckpt, killed)
    resumed = tmp_path / "resumed"
    run_recipe(recipe, config, settings(resumed) + ckpt + [
        f"checkpointer.checkpoint_dir={last}", f"checkpointer.checkpoint_files=[{base}/consolidated.00.pth]",
        "checkpointer.adapter_checkpoint=adapter_0.pt", "checkpointer.recipe_checkpoint=recipe_state.pt",
        "resume_from_checkpoint=True"])
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == list(range(step + 1, STEPS + 1))
    assert all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit
    adapter = torch.load(straight / "adapter_0.pt", weights_only=True)
    assert_state_dicts_equal(adapter, torch.load(resumed / "adapter_0.pt", weights_only=True))
    merged_a = torch.load(straight / "meta_model_0.pt", weights_only=True)
    assert_state_dicts_equal(merged_a, torch.load(resumed / "meta_model_0.pt", weights_only=True))

    # The layout Meta ships: the input's keys (output.weight == tok_embeddings.weight),
    # params.json and tokenizer.model beside it, unchanged.
    original = torch.load(base / "consolidated.00.pth", weights_only=True)
    assert merged_a.keys() == original.keys()
    assert torch.equal(merged_a["output.weight"], merged_a["tok_embeddings.weight"])
    for name in ("params.json", "tokenizer.model"):
        assert (straight / name).read_bytes() == (base / name).read_bytes()

    # The merged model is written in the input's dtype (bf16; the run computed in fp32): the
    # fp32 merge of base and adapter, rounded once. That fp32 merge, ours, against peft's
    # adapter applied to transformers' base model.
    merged = get_merged_lora_ckpt({**tune_state_dict(hf), **adapter}, rank=4, alpha=8)
    written = meta_to_tune(merged_a)
    assert all(torch.equal(written[k], v.bfloat16()) for k, v in merged.items())
    ours = our_model(merged)
    peft = pytest.importorskip("peft")
    peft_dir = straight / "adapter_0_peft"
    tokens = torch.randint(0, TINY.vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base_logits = our_model(tune_state_dict(hf))(tokens)  # before peft wraps hf in place
    assert json.loads((peft_dir / "adapter_config.json").read_text())["r"] == 4
    with_adapter = peft.PeftModel.from_pretrained(hf, str(peft_dir)).eval()
    with torch.no_grad():
        reference = with_adapter(input_ids=tokens).logits
        torch.testing.assert_close(ours(tokens), reference, atol=ATOL, rtol=0)
        # the adapter does something: the base model's logits are far away
        assert (base_logits - reference).abs().max() > 100 * ATOL


def test_greedy_generation_matches_transformers_generate(tmp_path):
    """KV-cached greedy decoding on the tied model, token for token (40 new tokens)."""
    hf = hf_model(seed=3)
    ours = our_model(tune_state_dict(hf))
    tok = llama3_tokenizer(str(write_tokenizer(tmp_path / "tokenizer.model")))
    prompt = torch.tensor(tok.encode("The quick brown fox jumps over", add_bos=True, add_eos=False))
    n = 40
    with torch.no_grad():
        expected = hf.generate(prompt[None], max_new_tokens=n, do_sample=False, eos_token_id=None,
                               pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))[0]
        got = generate(ours, prompt, max_new_tokens=n, temperature=0)
    assert len(expected) == len(prompt) + n
    assert got.tolist() == expected.tolist()
    assert len(set(got[len(prompt):].tolist())) > 5  # not one token repeated
