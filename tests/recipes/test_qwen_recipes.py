"""Qwen 2.5 and Qwen 3 end to end: tiny models (2.5-style: q/k/v biases, tied; 3-style:
q/k norm, head_dim 32 != 64 / 4, untied) with the real Qwen tokenizers, fine-tuned through
`tune run` from the folder transformers writes, killed after a step checkpoint and resumed
bit for bit, their outputs read back by transformers and peft; greedy generation against
transformers' ``generate``.

Needs the real tokenizer.json files from ``../shared`` (skips cleanly without them)."""

import json

import pytest
import torch

from torchtune.generation import generate

from qwen_recipe_helpers import (
    QWEN2,
    QWEN3,
    hf_model,
    hf_to_tune,
    our_model,
    tokenizer_dir,
    tune_state_dict,
    write_config,
    write_hf_folder,
)
from recipe_helpers import assert_state_dicts_equal, kill_when, losses, run_recipe, start_recipe

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ATOL = 1e-5
STEPS, EVERY, KILL_AT = 4, 2, 2


def settings(output_dir):
    return [f"output_dir={output_dir}", "metric_logger.filename=log.jsonl", "log_every_n_steps=1",
            "log_peak_memory_stats=False", "dataset.max_seq_len=64", "batch_size=2",
            f"max_steps_per_epoch={STEPS}", "lr_scheduler.num_warmup_steps=1",
            f"save_every_n_steps={EVERY}"]


# A validation pass per step (no training state changes) so the kill lands between checkpoints.
SLOW_STEPS = [
    "validation_dataset={_component_: torchtune.datasets.text_completion_dataset, source: text, "
    "data_files: torchtune/assets/tinyshakespeare.txt, sample_by: paragraph, max_seq_len: 64, packed: True, "
    "split: 'train[:40]'}",
    "validate_every_n_steps=1",
]


def kill_and_find_step(recipe, config, overrides, killed):
    proc = start_recipe(recipe, config, overrides + SLOW_STEPS)
    kill_when(proc, killed / f"step_{KILL_AT}" / "recipe_state.pt")
    last = max(killed.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    step = int(last.name.split("_")[1])
    assert KILL_AT <= step < STEPS and not (killed / "epoch_0").exists()
    return last, step


def load_folder(folder, names):
    weights = {}
    for name in names:
        weights.update(safetensors_torch.load_file(str(folder / name)))
    return weights


def tokens_for(tiny):
    return torch.randint(0, tiny.vocab, (2, 40), generator=torch.Generator().manual_seed(1))


def test_qwen2_5_full_finetune_from_hf_killed_resumed_and_read_by_transformers(tmp_path):
    tiny = QWEN2
    tokenizer_dir(tiny)
    base = tmp_path / "hf"
    _, names = write_hf_folder(tiny, base)
    config = write_config(tiny, tmp_path / "full.yaml", "full", base / "tokenizer.json")
    recipe = "full_finetune_single_device"
    ckpt = [f"checkpointer.checkpoint_dir={base}", f"checkpointer.checkpoint_files=[{','.join(names)}]"]

    straight = tmp_path / "straight"
    run_recipe(recipe, config, settings(straight) + ckpt)
    killed = tmp_path / "killed"
    last, step = kill_and_find_step(recipe, config, settings(killed) + ckpt, killed)
    resumed = tmp_path / "resumed"
    run_recipe(recipe, config, settings(resumed) + [
        f"checkpointer.checkpoint_dir={last}", f"checkpointer.checkpoint_files=[{','.join(names)}]",
        "checkpointer.recipe_checkpoint=recipe_state.pt", "resume_from_checkpoint=True"])
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == list(range(step + 1, STEPS + 1))
    assert all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit

    out_a, out_b = straight / "epoch_0", resumed / "epoch_0"
    weights = {}
    for name in names:
        a = safetensors_torch.load_file(str(out_a / name))
        assert_state_dicts_equal(a, safetensors_torch.load_file(str(out_b / name)))
        weights.update(a)
    assert "lm_head.weight" not in weights  # tied: as transformers writes it
    assert "model.layers.0.self_attn.q_proj.bias" in weights
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "model.safetensors.index.json"} <= {p.name for p in out_a.iterdir()}

    hf = transformers.Qwen2ForCausalLM.from_pretrained(out_a, attn_implementation="eager").eval()
    assert hf.config.tie_word_embeddings and hf.lm_head.weight is hf.model.embed_tokens.weight
    ours = our_model(tiny, hf_to_tune(tiny, weights))
    tokens = tokens_for(tiny)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=ATOL, rtol=0)
    # And training moved the weights, biases included.
    original = load_folder(base, names)
    for key in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias"):
        assert not torch.equal(original[key], weights[key]), key


def test_qwen3_lora_from_hf_killed_resumed_merged_and_peft(tmp_path):
    tiny = QWEN3
    tokenizer_dir(tiny)
    base = tmp_path / "hf"
    hf, names = write_hf_folder(tiny, base)
    config = write_config(tiny, tmp_path / "lora.yaml", "lora", base / "tokenizer.json")
    recipe = "lora_finetune_single_device"
    ckpt = [f"checkpointer.checkpoint_dir={base}", f"checkpointer.checkpoint_files=[{','.join(names)}]",
            "sample_prompt=null"]

    straight = tmp_path / "straight"
    run_recipe(recipe, config, settings(straight) + ckpt)
    killed = tmp_path / "killed"
    last, step = kill_and_find_step(recipe, config, settings(killed) + ckpt, killed)
    resumed = tmp_path / "resumed"
    run_recipe(recipe, config, settings(resumed) + ckpt + [
        f"checkpointer.checkpoint_dir={last}",
        f"checkpointer.checkpoint_files=[{','.join(str(base / n) for n in names)}]",
        "checkpointer.adapter_checkpoint=adapter_0.pt", "checkpointer.recipe_checkpoint=recipe_state.pt",
        "resume_from_checkpoint=True"])
    ls, lr = losses(straight), losses(resumed)
    assert sorted(lr) == list(range(step + 1, STEPS + 1))
    assert all(lr[s] == ls[s] for s in lr), (ls, lr)  # bit for bit
    assert_state_dicts_equal(torch.load(straight / "adapter_0.pt", weights_only=True),
                             torch.load(resumed / "adapter_0.pt", weights_only=True))
    merged_hf = load_folder(straight / "epoch_0", names)
    assert_state_dicts_equal(merged_hf, load_folder(resumed / "epoch_0", names))
    assert "lm_head.weight" in merged_hf  # untied
    assert "model.layers.0.self_attn.q_norm.weight" in merged_hf

    # The merged folder in transformers, against ours.
    loaded = transformers.Qwen3ForCausalLM.from_pretrained(straight / "epoch_0", attn_implementation="eager").eval()
    assert not loaded.config.tie_word_embeddings and loaded.config.head_dim == tiny.head_dim
    ours = our_model(tiny, hf_to_tune(tiny, merged_hf))
    tokens = tokens_for(tiny)
    with torch.no_grad():
        merged_logits = ours(tokens)
        torch.testing.assert_close(merged_logits, loaded(tokens).logits, atol=ATOL, rtol=0)
        base_logits = our_model(tiny, tune_state_dict(tiny, hf))(tokens)

    # adapter_0_peft onto transformers' base model gives the merged logits.
    peft = pytest.importorskip("peft")
    peft_dir = straight / "adapter_0_peft"
    assert json.loads((peft_dir / "adapter_config.json").read_text())["r"] == 4
    with_adapter = peft.PeftModel.from_pretrained(hf, str(peft_dir)).eval()
    with torch.no_grad():
        reference = with_adapter(input_ids=tokens).logits
    torch.testing.assert_close(merged_logits, reference, atol=ATOL, rtol=0)
    # the adapter does something: the base model's logits are far away
    assert (base_logits - reference).abs().max() > 100 * ATOL


def test_qwen3_greedy_generation_matches_transformers_generate():
    """KV-cached greedy decoding on the tiny Qwen 3 model, token for token (40 new tokens)."""
    from torchtune.models.qwen3 import qwen3_tokenizer

    tiny = QWEN3
    folder = tokenizer_dir(tiny)
    hf = hf_model(tiny, seed=3)
    ours = our_model(tiny, tune_state_dict(tiny, hf))
    tok = qwen3_tokenizer(str(folder / "tokenizer.json"))
    prompt = torch.tensor(tok.encode("The quick brown fox jumps over", add_eos=False))
    n = 40
    with torch.no_grad():
        expected = hf.generate(prompt[None], max_new_tokens=n, do_sample=False, eos_token_id=None,
                               pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))[0]
        got = generate(ours, prompt, max_new_tokens=n, temperature=0)
    assert len(expected) == len(prompt) + n
    assert got.tolist() == expected.tolist()
    assert len(set(got[len(prompt):].tolist())) > 5  # not one token repeated
