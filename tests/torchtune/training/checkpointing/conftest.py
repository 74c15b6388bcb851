"""Tiny Llama 2 checkpoints in Meta, HF and internal layouts, written fresh for each test."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from torchtune.models.llama2._convert_weights import tune_to_hf, tune_to_meta

# 4 query heads, 2 kv heads (GQA), head_dim 8.
TINY = SimpleNamespace(vocab=64, dim=32, n_h=4, n_kv=2, layers=2, hidden=48, max_seq_len=32)


def tiny_tune_sd(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random internal-layout state dict of the tiny model (no RNG-free fill needed:
    round trips compare bits, parity tests compare two models on the same weights)."""
    from torchtune.models.llama2 import llama2

    torch.manual_seed(seed)
    model = llama2(
        vocab_size=TINY.vocab,
        num_layers=TINY.layers,
        num_heads=TINY.n_h,
        num_kv_heads=TINY.n_kv,
        embed_dim=TINY.dim,
        intermediate_dim=TINY.hidden,
        max_seq_len=TINY.max_seq_len,
    )
    g = torch.Generator().manual_seed(seed)
    # Norm scales default to ones: randomise them too so a dropped/misnamed tensor shows up.
    # Scales like a trained model's keep logits moderate, so fp32 parity holds at 1e-5.
    return {
        k: ((1.0 if v.dim() == 1 else 0.0) + 0.1 * torch.randn(v.shape, generator=g)).to(dtype)
        for k, v in model.state_dict().items()
    }


def tiny_model(lora: bool = False, **lora_kwargs):
    from torchtune.models.llama2 import llama2, lora_llama2

    common = dict(
        vocab_size=TINY.vocab,
        num_layers=TINY.layers,
        num_heads=TINY.n_h,
        num_kv_heads=TINY.n_kv,
        embed_dim=TINY.dim,
        intermediate_dim=TINY.hidden,
        max_seq_len=TINY.max_seq_len,
    )
    return (lora_llama2(**common, **lora_kwargs) if lora else llama2(**common)).eval()


def hf_config_dict():
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": TINY.vocab,
        "hidden_size": TINY.dim,
        "intermediate_size": TINY.hidden,
        "num_hidden_layers": TINY.layers,
        "num_attention_heads": TINY.n_h,
        "num_key_value_heads": TINY.n_kv,
        "max_position_embeddings": TINY.max_seq_len,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }


def write_hf_checkpoint(folder, fmt="safetensors", n_shards=1, index=True, seed=0):
    """Write an HF-layout tiny checkpoint; returns (file names, hf state dict, weight map)."""
    os.makedirs(folder, exist_ok=True)
    hf = tune_to_hf(tiny_tune_sd(seed), num_heads=TINY.n_h, num_kv_heads=TINY.n_kv, dim=TINY.dim)
    keys = list(hf)
    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    if n_shards == 1:
        names = [f"{stem}.{ext}"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{n_shards:05d}.{ext}" for i in range(n_shards)]
    # An uneven split that does not follow layer boundaries, like real HF shards.
    cut = len(keys) * 2 // 3
    parts = [keys] if n_shards == 1 else [keys[:cut], keys[cut:]]
    weight_map = {}
    for name, part in zip(names, parts):
        tensors = {k: hf[k] for k in part}
        weight_map.update({k: name for k in part})
        if fmt == "safetensors":
            save_file(tensors, os.path.join(folder, name), metadata={"format": "pt"})
        else:
            torch.save(tensors, os.path.join(folder, name))
    if index:
        total = sum(v.numel() * v.element_size() for v in hf.values())
        with open(os.path.join(folder, f"{stem}.{ext}.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config_dict(), f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": TINY.max_seq_len}, f)
    return names, hf, weight_map


def write_meta_checkpoint(folder, seed=0):
    os.makedirs(folder, exist_ok=True)
    meta = tune_to_meta(tiny_tune_sd(seed))
    torch.save(dict(meta, **{"rope.freqs": torch.ones(4)}), os.path.join(folder, "consolidated.00.pth"))
    params = {"dim": TINY.dim, "n_layers": TINY.layers, "n_heads": TINY.n_h,
              "n_kv_heads": TINY.n_kv, "vocab_size": TINY.vocab, "norm_eps": 1e-5}
    with open(os.path.join(folder, "params.json"), "w") as f:
        json.dump(params, f)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(b"\x00sentencepiece-model-bytes\xff")
    return meta


def recipe_state(epochs_run, steps_run=0):
    """What a recipe passes besides the weights when it saves an intermediate checkpoint."""
    return {
        "seed": 7,
        "epochs_run": epochs_run,
        "total_epochs": 3,
        "steps_run": steps_run,
        "optimizer": {"state": {0: {"exp_avg": torch.arange(4.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
    }


def lora_adapter(seed=0):
    """A rank-2 LoRA adapter on layer 0's q_proj of the tiny model."""
    g = torch.Generator().manual_seed(seed)
    return {
        "layers.0.attn.q_proj.lora_a.weight": torch.randn(2, TINY.dim, generator=g),
        "layers.0.attn.q_proj.lora_b.weight": torch.randn(TINY.dim, 2, generator=g),
    }


@pytest.fixture
def tiny():
    return SimpleNamespace(
        cfg=TINY,
        tune_sd=tiny_tune_sd,
        model=tiny_model,
        hf_config=hf_config_dict,
        write_hf=write_hf_checkpoint,
        write_meta=write_meta_checkpoint,
        recipe_state=recipe_state,
        adapter=lora_adapter,
    )
