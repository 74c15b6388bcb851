"""Tiny Llama 3.1-style (untied) and 3.2-style (tied) checkpoints, written by transformers
(the independent reference) or, for Meta's layout, by explicit Meta names."""

import json
import os
from types import SimpleNamespace

import torch

# 4 query heads, 2 kv heads (GQA), head_dim 8; every split dimension divides by 4.
TINY = SimpleNamespace(vocab=64, dim=32, n_h=4, n_kv=2, layers=2, hidden=48)

ROPE_31 = {
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
}


def hf_model(tied: bool, seed: int = 0):
    """A random transformers LlamaForCausalLM (norm scales random too, so a dropped or
    misnamed tensor shows up)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=TINY.vocab, hidden_size=TINY.dim, intermediate_size=TINY.hidden,
        num_hidden_layers=TINY.layers, num_attention_heads=TINY.n_h,
        num_key_value_heads=TINY.n_kv, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_parameters=ROPE_31, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((1.0 if p.dim() == 1 else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
    return model


def write_hf_folder(folder, tied: bool, seed: int = 0):
    """save_pretrained in small safetensors shards + index, tokenizer files, and the things
    a Hub download also holds (original/, .tune_download.json, a README)."""
    model = hf_model(tied, seed)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    extras = {
        "tokenizer.json": '{"version": "1.0", "model": {"type": "BPE"}}',
        "tokenizer_config.json": '{"model_max_length": 131072}',
        "special_tokens_map.json": '{"bos_token": "<|begin_of_text|>"}',
        "README.md": "# tiny llama 3\n",
        ".tune_download.json": json.dumps({"repo_id": "tiny/llama3", "revision": "abc"}),
    }
    for name, text in extras.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(folder, "original"), exist_ok=True)
    with open(os.path.join(folder, "original", "params.json"), "w") as f:
        json.dump(meta_params(), f)
    return model


def meta_params():
    """params.json as Meta ships it for Llama 3.1/3.2."""
    return {
        "dim": TINY.dim, "n_layers": TINY.layers, "n_heads": TINY.n_h, "n_kv_heads": TINY.n_kv,
        "vocab_size": TINY.vocab, "ffn_dim_multiplier": 1.5, "multiple_of": 16,
        "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True,
    }


def meta_state_dict(tied: bool = False, seed: int = 0):
    """A full Meta-layout state dict under Meta's own names (written out here, not through
    our key maps). Tied: ``output.weight`` equals the embedding, as in Meta's 3.2 files."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return 0.1 * torch.randn(*shape, generator=g)

    d, hd = TINY.dim, TINY.dim // TINY.n_h
    sd = {"tok_embeddings.weight": rnd(TINY.vocab, d)}
    for i in range(TINY.layers):
        p = f"layers.{i}."
        sd[p + "attention.wq.weight"] = rnd(TINY.n_h * hd, d)
        sd[p + "attention.wk.weight"] = rnd(TINY.n_kv * hd, d)
        sd[p + "attention.wv.weight"] = rnd(TINY.n_kv * hd, d)
        sd[p + "attention.wo.weight"] = rnd(d, TINY.n_h * hd)
        sd[p + "feed_forward.w1.weight"] = rnd(TINY.hidden, d)
        sd[p + "feed_forward.w2.weight"] = rnd(d, TINY.hidden)
        sd[p + "feed_forward.w3.weight"] = rnd(TINY.hidden, d)
        sd[p + "attention_norm.weight"] = 1 + rnd(d)
        sd[p + "ffn_norm.weight"] = 1 + rnd(d)
    sd["norm.weight"] = 1 + rnd(d)
    sd["output.weight"] = sd["tok_embeddings.weight"].clone() if tied else rnd(TINY.vocab, d)
    return {k: v.to(torch.bfloat16) for k, v in sd.items()}  # Meta ships bf16


# How fairscale splits each tensor across model-parallel ranks, spelled out independently of
# torchtune's _meta_shards: ColumnParallelLinear on dim 0, RowParallelLinear and
# ParallelEmbedding on dim 1, norms replicated.
def fairscale_dim(key):
    if key.endswith(("wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight")) or key == "output.weight":
        return 0
    if key.endswith(("wo.weight", "w2.weight")) or key == "tok_embeddings.weight":
        return 1
    assert key.endswith("norm.weight"), key
    return None


def split_like_fairscale(sd, n):
    ranks = [{} for _ in range(n)]
    for key, value in sd.items():
        dim = fairscale_dim(key)
        for r in range(n):
            if dim is None:
                ranks[r][key] = value.clone()
            else:
                size = value.shape[dim] // n
                ranks[r][key] = value.narrow(dim, r * size, size).clone()
    return ranks


def write_meta_folder(folder, sd, n_ranks=1):
    """``consolidated.NN.pth`` per rank + params.json + tokenizer.model; returns file names."""
    os.makedirs(folder, exist_ok=True)
    names = [f"consolidated.{r:02d}.pth" for r in range(n_ranks)]
    for name, part in zip(names, split_like_fairscale(sd, n_ranks)):
        torch.save(part, os.path.join(folder, name))
    with open(os.path.join(folder, "params.json"), "w") as f:
        json.dump(meta_params(), f)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(b"tiktoken-bpe-ranks\n" + bytes(range(256)))
    return names

