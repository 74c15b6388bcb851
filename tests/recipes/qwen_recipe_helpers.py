"""Tiny Qwen 2.5-style (q/k/v biases, tied embeddings) and Qwen 3-style (per-head q/k
RMSNorm, head_dim 32 != 64 / 4, untied) models with the real Qwen tokenizers, for
end-to-end recipe tests: their configs (written from the stories260K ones) and their HF
folders (written by transformers' ``save_pretrained``).

transformers' ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` are the reference: they make the
random weights; our files are written from them by transformers itself.

The real tokenizer.json files (~11 MB each) live in ``../shared/data/tokenizers/`` beside
the repository (present in CI, absent in a user's clone): ``tokenizer_dir`` skips the
calling test when they are missing.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from torchtune.config._parse import load_config
from recipe_helpers import REPO

SHARED_TOKENIZERS = REPO.parent / "shared" / "data" / "tokenizers"

# The real Qwen vocabulary (model vocab 151936, a padded multiple of the tokenizer's size).
# 4 query heads, 2 kv heads (GQA).
QWEN2 = SimpleNamespace(family="qwen2", vocab=151936, dim=64, n_h=4, n_kv=2, layers=2, hidden=256,
                        head_dim=16, tied=True, max_seq_len=256, tokenizer="qwen2.5")
QWEN3 = SimpleNamespace(family="qwen3", vocab=151936, dim=64, n_h=4, n_kv=2, layers=2, hidden=256,
                        head_dim=32, tied=False, max_seq_len=256, tokenizer="qwen3")
EOS = 151645  # <|im_end|>
PAD = 151643  # <|endoftext|>


def tokenizer_dir(tiny) -> Path:
    """The real tokenizer's folder (tokenizer.json + tokenizer_config.json), or skip."""
    folder = SHARED_TOKENIZERS / tiny.tokenizer
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"real Qwen tokenizer not available ({folder / 'tokenizer.json'} missing)")
    return folder


def hf_config(tiny):
    import transformers

    common = dict(
        vocab_size=tiny.vocab, hidden_size=tiny.dim, intermediate_size=tiny.hidden,
        num_hidden_layers=tiny.layers, num_attention_heads=tiny.n_h,
        num_key_value_heads=tiny.n_kv, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=tiny.tied, bos_token_id=PAD, eos_token_id=EOS,
        attn_implementation="eager",
    )
    if tiny.family == "qwen2":
        return transformers.Qwen2Config(**common)
    return transformers.Qwen3Config(head_dim=tiny.head_dim, attention_bias=False, **common)


def hf_model(tiny, seed: int = 0):
    """A random transformers model; weights rounded through bf16 (what Qwen ships)."""
    import transformers

    cls = transformers.Qwen2ForCausalLM if tiny.family == "qwen2" else transformers.Qwen3ForCausalLM
    torch.manual_seed(seed)
    model = cls(hf_config(tiny)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            value = 1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.1 * noise
            p.copy_(value.to(torch.bfloat16).float())
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert tied == tiny.tied
    return model


def hf_to_tune(tiny, sd: dict) -> dict:
    """Our keys for an HF state dict (tied: lm_head dropped)."""
    if tiny.family == "qwen2":
        from torchtune.models.qwen2._convert_weights import hf_to_tune as convert
    else:
        from torchtune.models.qwen3._convert_weights import hf_to_tune as convert
    sd = {k: v.clone() for k, v in sd.items() if not (tiny.tied and k == "lm_head.weight")}
    return convert(sd, tiny.n_h, tiny.n_kv, tiny.dim, tiny.head_dim)


def tune_state_dict(tiny, hf) -> dict:
    return hf_to_tune(tiny, hf.state_dict())


def model_kwargs(tiny) -> dict:
    kw = dict(vocab_size=tiny.vocab, num_layers=tiny.layers, num_heads=tiny.n_h,
              num_kv_heads=tiny.n_kv, embed_dim=tiny.dim, max_seq_len=tiny.max_seq_len,
              intermediate_dim=tiny.hidden, norm_eps=1e-6, tie_word_embeddings=tiny.tied)
    if tiny.family == "qwen3":
        kw["head_dim"] = tiny.head_dim
    return kw


def our_model(tiny, sd: dict = None):
    if tiny.family == "qwen2":
        from torchtune.models.qwen2 import qwen2 as build
    else:
        from torchtune.models.qwen3 import qwen3 as build
    model = build(**model_kwargs(tiny))
    if sd is not None:
        model.load_state_dict(sd)
    return model.eval()


def write_hf_folder(tiny, folder: Path, seed: int = 0):
    """``save_pretrained`` (sharded safetensors + index, config.json, generation_config.json)
    and the real tokenizer files, as a Hub download has them. Returns the HF model and the
    shard names."""
    hf = hf_model(tiny, seed)
    hf.save_pretrained(folder, safe_serialization=True, max_shard_size="20MB")
    src = tokenizer_dir(tiny)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(src / name, folder / name)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return hf, sorted(set(index["weight_map"].values()))


def write_config(tiny, path: Path, recipe: str, tokenizer: Path) -> str:
    """The stories260K single-device config with the tiny Qwen model, the real Qwen
    tokenizer and the HF checkpointer (checkpoint paths come as overrides)."""
    kind = "full" if recipe == "full" else "lora"
    cfg = OmegaConf.to_container(load_config(f"stories260K/{kind}_single_device"), resolve=False)
    model = model_kwargs(tiny)
    module = f"torchtune.models.{tiny.family}"
    if kind == "full":
        cfg["model"] = {"_component_": f"{module}.{tiny.family}", **model}
    else:
        cfg["model"] = {"_component_": f"{module}.lora_{tiny.family}",
                        "lora_attn_modules": ["q_proj", "k_proj", "v_proj", "output_proj"],
                        "apply_lora_to_mlp": True, "apply_lora_to_output": False, **model,
                        "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1}
    tok = "torchtune.models.qwen2_5.qwen2_5_tokenizer" if tiny.family == "qwen2" else \
        "torchtune.models.qwen3.qwen3_tokenizer"
    cfg["tokenizer"] = {"_component_": tok, "path": str(tokenizer)}
    cfg["checkpointer"]["_component_"] = "torchtune.utils.FullModelHFCheckpointer"
    cfg["checkpointer"]["model_type"] = tiny.family.upper()
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return str(path)
