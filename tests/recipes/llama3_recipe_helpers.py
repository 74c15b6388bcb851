"""A tiny Llama 3.2-style model (tied embeddings, llama3 RoPE scaling factor 32) with the
real Llama 3 tokenizer, for end-to-end recipe tests: its configs (written from the
stories260K ones) and its checkpoints in the layouts transformers and Meta ship.

transformers' ``LlamaForCausalLM`` is the reference: it makes the random weights; our
files are written from them by transformers itself (HF layout) or under Meta's own key
names (Meta layout).
"""

import json
import lzma
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from torchtune.config._parse import load_config
from torchtune.models.llama2._convert_weights import hf_to_tune
from torchtune.models.llama3._convert_weights import tune_to_meta
from recipe_helpers import REPO

# 4 query heads, 2 kv heads (GQA), head_dim 16; the real Llama 3 vocabulary.
TINY = SimpleNamespace(vocab=128256, dim=64, n_h=4, n_kv=2, layers=2, hidden=256, max_seq_len=256)
ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
TOKENIZER_XZ = REPO / "tests" / "assets" / "llama3_tokenizer.model.xz"
BOS, EOS = 128000, 128001


def write_tokenizer(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.decompress(TOKENIZER_XZ.read_bytes()))
    return path


def hf_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=TINY.vocab, hidden_size=TINY.dim, intermediate_size=TINY.hidden,
        num_hidden_layers=TINY.layers, num_attention_heads=TINY.n_h,
        num_key_value_heads=TINY.n_kv, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_parameters=dict(ROPE), tie_word_embeddings=True, bos_token_id=BOS,
        eos_token_id=EOS, attn_implementation="eager",
    )


def hf_model(seed: int = 0):
    """A random tied transformers model; weights rounded through bf16 (what Meta ships), so
    a bf16 file holds them exactly."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(hf_config()).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            value = 1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.1 * noise
            p.copy_(value.to(torch.bfloat16).float())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def tune_state_dict(hf) -> dict:
    """Our keys for the HF model's weights (tied: lm_head dropped)."""
    sd = {k: v.clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    return hf_to_tune(sd, TINY.n_h, TINY.n_kv, TINY.dim)


def our_model(sd: dict = None, lora: bool = False, **lora_kwargs):
    from torchtune.models.llama3_2 import llama3_2, lora_llama3_2

    sizes = dict(vocab_size=TINY.vocab, num_layers=TINY.layers, num_heads=TINY.n_h,
                 num_kv_heads=TINY.n_kv, embed_dim=TINY.dim, max_seq_len=TINY.max_seq_len,
                 intermediate_dim=TINY.hidden)
    model = lora_llama3_2(**lora_kwargs, **sizes) if lora else llama3_2(**sizes)
    if sd is not None:
        model.load_state_dict(sd)
    return model.eval()


def write_hf_folder(folder: Path, seed: int = 0):
    """``save_pretrained`` (sharded safetensors + index, config.json with
    tie_word_embeddings and llama3 rope scaling, generation_config.json), the tokenizer
    files of a Hub download and ``original/tokenizer.model``. Returns the HF model and the
    shard names."""
    hf = hf_model(seed)
    hf.save_pretrained(folder, safe_serialization=True, max_shard_size="20MB")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "model_max_length": 131072}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}))
    write_tokenizer(folder / "original" / "tokenizer.model")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return hf, sorted(set(index["weight_map"].values()))


def meta_params() -> dict:
    """params.json as Meta ships it for Llama 3.2 (ffn 1.5 * (2/3 * 4 * 64), rounded up to 32: 256)."""
    return {"dim": TINY.dim, "n_layers": TINY.layers, "n_heads": TINY.n_h, "n_kv_heads": TINY.n_kv,
            "vocab_size": TINY.vocab, "ffn_dim_multiplier": 1.5, "multiple_of": 32,
            "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}


def write_meta_folder(folder: Path, seed: int = 0):
    """``consolidated.00.pth`` (bf16, ``output.weight`` equal to ``tok_embeddings.weight``),
    params.json and tokenizer.model, as in Meta's Llama 3.2 download. Returns the HF model
    of the same weights."""
    hf = hf_model(seed)
    meta = tune_to_meta(tune_state_dict(hf))
    meta["output.weight"] = meta["tok_embeddings.weight"].clone()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.to(torch.bfloat16) for k, v in meta.items()}, folder / "consolidated.00.pth")
    (folder / "params.json").write_text(json.dumps(meta_params()))
    write_tokenizer(folder / "tokenizer.model")
    return hf


def write_config(path: Path, recipe: str, tokenizer: Path) -> str:
    """The stories260K single-device config with the tiny Llama 3.2 model and the Llama 3
    tokenizer; checkpointer settings come as overrides."""
    kind = "full" if recipe == "full" else "lora"
    cfg = OmegaConf.to_container(load_config(f"stories260K/{kind}_single_device"), resolve=False)
    model = {"vocab_size": TINY.vocab, "num_layers": TINY.layers, "num_heads": TINY.n_h,
             "num_kv_heads": TINY.n_kv, "embed_dim": TINY.dim, "max_seq_len": TINY.max_seq_len,
             "intermediate_dim": TINY.hidden, "norm_eps": 1e-5, "tie_word_embeddings": True}
    if kind == "full":
        cfg["model"] = {"_component_": "torchtune.models.llama3_2.llama3_2", **model}
    else:
        cfg["model"] = {"_component_": "torchtune.models.llama3_2.lora_llama3_2",
                        "lora_attn_modules": ["q_proj", "k_proj", "v_proj", "output_proj"],
                        "apply_lora_to_mlp": True, "apply_lora_to_output": False, **model,
                        "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1}
    cfg["tokenizer"] = {"_component_": "torchtune.models.llama3.llama3_tokenizer", "path": str(tokenizer)}
    cfg["checkpointer"]["model_type"] = "LLAMA3_2"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return str(path)
