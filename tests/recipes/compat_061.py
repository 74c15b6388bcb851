"""torchtune 0.6.1's shipped configs, as its users have them, run against this library.

The configs come from the ``torchtune==0.6.1`` wheel itself, fetched with pip into a cache
(never copied into this repository). 0.6.1's recipe registry says which recipe each config
is for; it is read with ``ast`` (nothing from the wheel is executed).

A config *applies* when this library has its recipe and its model family; the rest are
listed with the reason. An applicable config must pass ``tune validate`` unchanged, and
must run through ``tune run`` with only tiny-model overrides: sizes (a 2-layer model of
the family, a short ``tokenizer.max_seq_len``), paths (checkpoint, tokenizer, local data)
and steps (one optimizer step of batch 2 on CPU in fp32).
"""

import ast
import hashlib
import importlib.util
import json
import lzma
import sys
import zipfile
from pathlib import Path
from typing import Optional

import torch

from recipe_helpers import ALPACA, REPO


def _names_script():
    """scripts/compat_061_names.py, which owns fetching the wheel (pip, into a cache)."""
    spec = importlib.util.spec_from_file_location("compat_061_names", REPO / "scripts" / "compat_061_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_wheel = _names_script().fetch_wheel

# 0.6.1 recipe -> the recipe here that runs its configs.
RECIPES = {
    "full_finetune_single_device": "full_finetune_single_device",
    "full_finetune_distributed": "full_finetune_distributed",
    "lora_finetune_single_device": "lora_finetune_single_device",
    "lora_finetune_distributed": "lora_finetune_distributed",
    "lora_dpo_single_device": "lora_dpo_single_device",
    "lora_dpo_distributed": "lora_dpo_distributed",
    "full_dpo_distributed": "full_dpo_distributed",
    "generate": "generate",
    "dev/generate_v2": "generate",  # the same keys; the chat prompt form is ours too
    "eleuther_eval": "eleuther_eval",
}

# Model families here: tiny sizes, transformers config kind, rope, tied output.
TINY = dict(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, intermediate_dim=64)
FAMILIES = {
    "llama2": dict(builder="torchtune.models.llama2.llama2", vocab=32000, theta=10000.0, rope=None,
                   tied=False, tokenizer="llama2", hf="llama"),
    "code_llama2": dict(builder="torchtune.models.llama2.llama2", vocab=32016, theta=1000000.0,
                        rope=None, tied=False, tokenizer="llama2", hf="llama"),
    "llama3": dict(builder="torchtune.models.llama3.llama3", vocab=128256, theta=500000.0, rope=None,
                   tied=False, tokenizer="llama3", hf="llama"),
    "llama3_1": dict(builder="torchtune.models.llama3_1.llama3_1", vocab=128256, theta=500000.0,
                     rope=8.0, tied=False, tokenizer="llama3", hf="llama"),
    "llama3_2": dict(builder="torchtune.models.llama3_2.llama3_2", vocab=128256, theta=500000.0,
                     rope=32.0, tied=True, tokenizer="llama3", hf="llama"),
    "llama3_3": dict(builder="torchtune.models.llama3_1.llama3_1", vocab=128256, theta=500000.0,
                     rope=8.0, tied=False, tokenizer="llama3", hf="llama"),
    # Mistral 7B v0.1 has a 4096-token window; the tiny one a window shorter than its samples.
    "mistral": dict(builder="torchtune.models.mistral.mistral", vocab=32000, theta=10000.0, rope=None,
                    tied=False, tokenizer="llama2", hf="mistral", window=16),
    # Phi-3 mini's window is 2047; Phi-4 is Phi-3's architecture with no window.
    "phi3": dict(builder="torchtune.models.phi3.phi3", vocab=32064, theta=10000.0, rope=None,
                 tied=False, tokenizer="phi3", hf="phi3", window=16),
    "phi4": dict(builder="torchtune.models.phi3.phi3", vocab=100352, theta=250000.0, rope=None,
                 tied=False, tokenizer="phi4", hf="phi3"),
    # Gemma: head_dim given (8: d / n_h here), tied; Gemma 2 windows every other layer.
    "gemma": dict(builder="torchtune.models.gemma.gemma", vocab=256000, theta=10000.0, rope=None,
                  tied=True, tokenizer="gemma", hf="gemma"),
    "gemma2": dict(builder="torchtune.models.gemma2.gemma2", vocab=256000, theta=10000.0, rope=None,
                   tied=True, tokenizer="gemma", hf="gemma2", window=16),
    "qwen2": dict(builder="torchtune.models.qwen2.qwen2", vocab=151936, theta=1000000.0, rope=None,
                  tied=False, tokenizer="qwen", hf="qwen2"),
    "qwen2_5": dict(builder="torchtune.models.qwen2.qwen2", vocab=151936, theta=1000000.0, rope=None,
                    tied=False, tokenizer="qwen", hf="qwen2"),
}
# NF4 quantizes blocks of 64 values with scalers in groups of 256: a QLoRA model's
# quantized weights need a multiple of 16384 elements (true of every published size).
TINY_NF4 = dict(num_layers=2, num_heads=4, num_kv_heads=4, embed_dim=128, intermediate_dim=128)
# tokenizer.max_seq_len: samples are cut here, as 0.6.1 cuts them. The Llama 3.1 format's
# knowledge-date system header alone takes 27 tokens, so a preference prompt needs more.
MAX_SEQ_LEN = 64
MODEL_MAX_SEQ_LEN = 256


# ---------------------------------------------------------------------- fetching


def extract_configs(wheel: Path, dest: Path) -> Path:
    """``recipes/configs/**`` of the wheel under ``dest``; returns the configs folder."""
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("recipes/configs/") and name.endswith(".yaml"):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
    return dest / "recipes" / "configs"


def registry(wheel: Path) -> list[tuple[str, str, str]]:
    """``(recipe, config name, config file)`` for every config 0.6.1's registry lists,
    read from ``torchtune/_recipe_registry.py`` with ``ast``."""
    with zipfile.ZipFile(wheel) as z:
        tree = ast.parse(z.read("torchtune/_recipe_registry.py"))
    entries = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Recipe":
            kw = {k.arg: k.value for k in node.keywords}
            recipe = ast.literal_eval(kw["name"])
            for cfg in kw["configs"].elts:
                ckw = {k.arg: ast.literal_eval(k.value) for k in cfg.keywords}
                entries.append((recipe, ckw["name"], ckw["file_path"]))
    return entries


# ---------------------------------------------------------------------- what applies


def family_of(cfg: dict) -> Optional[str]:
    component = (cfg.get("model") or {}).get("_component_", "")
    parts = component.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["torchtune", "models"] else None


def why_not_applicable(recipe: str, cfg: dict, recipes_here: set) -> Optional[str]:
    """None when the config applies; otherwise the reason it is skipped."""
    ours = RECIPES.get(recipe)
    if ours is None or ours not in recipes_here:
        return f"recipe {recipe} is not in this library"
    family = family_of(cfg)
    if family not in FAMILIES:
        return f"model family {family} is not in this library"
    return None


# ---------------------------------------------------------------------- tiny inputs


def _rope_parameters(spec: dict) -> dict:
    if spec["rope"] is None:
        return {"rope_type": "default", "rope_theta": spec["theta"]}
    return {"rope_type": "llama3", "rope_theta": spec["theta"], "factor": spec["rope"],
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


_STATE_DICTS: dict = {}


def tiny_hf_state_dict(family: str, sizes: dict, seed: int = 0) -> tuple[dict, dict]:
    """Random weights of the tiny model in transformers' layout, and its config.json (made
    once per family, sizes and seed; callers only read them)."""
    key = json.dumps([family, sizes, seed], sort_keys=True)
    if key not in _STATE_DICTS:
        _STATE_DICTS[key] = _make_tiny_hf_state_dict(family, sizes, seed)
    return _STATE_DICTS[key]


def _make_tiny_hf_state_dict(family: str, sizes: dict, seed: int) -> tuple[dict, dict]:
    import transformers

    spec = FAMILIES[family]
    common = dict(
        vocab_size=spec["vocab"], hidden_size=sizes["embed_dim"], intermediate_size=sizes["intermediate_dim"],
        num_hidden_layers=sizes["num_layers"], num_attention_heads=sizes["num_heads"],
        num_key_value_heads=sizes["num_kv_heads"], max_position_embeddings=MODEL_MAX_SEQ_LEN,
        rms_norm_eps=1e-6 if spec["hf"] == "qwen2" else 1e-5, rope_parameters=_rope_parameters(spec),
        tie_word_embeddings=spec["tied"],
    )
    if spec["hf"] == "llama":
        config, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
    elif spec["hf"] == "mistral":
        config = transformers.MistralConfig(**common, sliding_window=spec["window"])
        cls = transformers.MistralForCausalLM
    elif spec["hf"] == "phi3":
        config = transformers.Phi3Config(**common, sliding_window=spec.get("window"), pad_token_id=None)
        cls = transformers.Phi3ForCausalLM
    elif spec["hf"] == "gemma":
        head_dim = sizes["embed_dim"] // sizes["num_heads"]
        config = transformers.GemmaConfig(**dict(common, rms_norm_eps=1e-6), head_dim=head_dim)
        cls = transformers.GemmaForCausalLM
    elif spec["hf"] == "gemma2":
        head_dim = sizes["embed_dim"] // sizes["num_heads"]
        config = transformers.Gemma2Config(**dict(common, rms_norm_eps=1e-6), head_dim=head_dim,
                                           sliding_window=spec["window"], query_pre_attn_scalar=head_dim)
        cls = transformers.Gemma2ForCausalLM
    else:
        config, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = cls(config)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if spec["tied"]:
        sd.pop("lm_head.weight")
    return sd, config.to_dict()


def write_checkpoint(cfg: dict, family: str, root: Path, key: str = "checkpointer") -> list[str]:
    """The tiny model's weights in the files ``cfg.checkpointer`` names (HF shards as
    listed, or Meta's consolidated file), with config.json / params.json, in a folder under
    ``root`` that every run needing the same files shares (checkpoints are only read).
    Returns the overrides that point the config at them."""
    from safetensors.torch import save_file

    ck = cfg[key]
    sizes = tiny_sizes(cfg)
    files = ck["checkpoint_files"]
    extra = []
    if isinstance(files, dict):  # 0.6.1's filename_format + max_filename form: two shards
        width = len(str(files["max_filename"]))
        last = str(2).zfill(width)
        files = [files["filename_format"].format(str(i).zfill(width), last) for i in (1, 2)]
        extra.append(f"{key}.checkpoint_files.max_filename='{last}'")
    meta_format = ck["_component_"].endswith("MetaCheckpointer")
    what = json.dumps([family, sizes, list(files), meta_format], sort_keys=True)
    folder = root / f"ckpt_{hashlib.sha256(what.encode()).hexdigest()[:12]}"
    overrides = [f"{key}.checkpoint_dir={folder}", *extra]
    if folder.exists():
        return overrides
    sd, hf_config = tiny_hf_state_dict(family, sizes)
    folder.mkdir(parents=True)
    if meta_format:
        from torchtune.models.llama2._convert_weights import hf_to_tune
        from torchtune.models.llama3._convert_weights import tune_to_meta

        meta = tune_to_meta(hf_to_tune(sd, sizes["num_heads"], sizes["num_kv_heads"], sizes["embed_dim"]))
        path = folder / files[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(meta, path)
        spec = FAMILIES[family]
        (path.parent / "params.json").write_text(json.dumps({
            "dim": sizes["embed_dim"], "n_layers": sizes["num_layers"], "n_heads": sizes["num_heads"],
            "n_kv_heads": sizes["num_kv_heads"], "vocab_size": spec["vocab"], "norm_eps": 1e-5,
            "rope_theta": spec["theta"],
        }))
        return overrides
    (folder / "config.json").write_text(json.dumps(hf_config, default=str))
    keys = list(sd)
    shards = [keys[i::len(files)] for i in range(len(files))]
    for name, shard_keys in zip(files, shards):
        part = {k: sd[k].contiguous() for k in shard_keys}
        if name.endswith(".safetensors"):
            save_file(part, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(part, folder / name)
    return overrides


def write_tokenizer(kind: str, root: Path) -> list[str]:
    """The family's real tokenizer (Llama 2, Llama 3) or a tiny Qwen-style BPE as
    vocab.json + merges.txt (what 0.6.1's Qwen configs name), written once under ``root``
    for every run of that kind; returns the path overrides."""
    folder = root / f"tokenizer_{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind in ("llama2", "phi3"):  # Phi-3's tokenizer.model is Llama 2's
        return [f"tokenizer.path={REPO / 'tests' / 'assets' / 'llama2_tokenizer.model'}"]
    if kind == "phi4":
        from phi4_tokenizer_files import write_phi4_tokenizer
        from torchtune.models.phi4 import PHI4_SPECIAL_TOKENS

        if not (folder / "merges.txt").exists():
            texts = [r["instruction"] + "\n" + r["output"] for r in json.loads(ALPACA.read_text())[:200]]
            write_phi4_tokenizer(folder, texts, PHI4_SPECIAL_TOKENS)
        return [f"tokenizer.vocab_path={folder / 'vocab.json'}", f"tokenizer.merges_path={folder / 'merges.txt'}"]
    if kind == "gemma":  # a small model in Gemma's layout (the real one is under Gemma's terms)
        from gemma_tokenizer_files import gemma_layout_model

        path = folder / "tokenizer.model"
        if not path.exists():
            path.write_bytes(gemma_layout_model(gemma3=False))
        return [f"tokenizer.path={path}"]
    if kind == "llama3":
        path = folder / "tokenizer.model"
        if not path.exists():
            path.write_bytes(lzma.decompress((REPO / "tests" / "assets" / "llama3_tokenizer.model.xz").read_bytes()))
        return [f"tokenizer.path={path}"]
    sys.path.insert(0, str(REPO / "tests" / "torchtune" / "models" / "qwen_tokenizer"))
    from qwen_tokenizer_helpers import tiny_tokenizer_json

    overrides = [f"tokenizer.path={folder / 'vocab.json'}", f"tokenizer.merges_file={folder / 'merges.txt'}"]
    if (folder / "merges.txt").exists():
        return overrides
    model = json.loads(tiny_tokenizer_json())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return overrides


def tiny_sizes(cfg: dict) -> dict:
    quantized = cfg["model"]["_component_"].rsplit(".", 1)[-1].startswith("qlora_")
    return TINY_NF4 if quantized or cfg["model"].get("quantize_base") else TINY


def write_stack_exchange_pairs(path: Path) -> Path:
    """64 preference pairs in lvwerra/stack-exchange-paired's columns (question,
    response_j preferred over response_k), made from the alpaca test records."""
    records = json.loads(ALPACA.read_text())[:65]
    pairs = [{"question": a["instruction"], "response_j": a["output"], "response_k": b["output"]}
             for a, b in zip(records, records[1:])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pairs))
    return path


def model_overrides(cfg: dict, family: str) -> list[str]:
    """The family's generic builder at tiny sizes; a LoRA config keeps its LoRA settings."""
    spec = FAMILIES[family]
    name = cfg["model"]["_component_"].rsplit(".", 1)[-1]
    module, builder = spec["builder"].rsplit(".", 1)
    if name.startswith(("lora_", "qlora_")):
        builder = "lora_" + builder
    out = [f"model._component_={module}.{builder}", f"model.vocab_size={spec['vocab']}",
           f"model.max_seq_len={MODEL_MAX_SEQ_LEN}"]
    out += [f"model.{k}={v}" for k, v in tiny_sizes(cfg).items()]
    if spec["builder"].endswith((".llama2", ".phi3")) and spec["theta"] != 10000.0:  # Code Llama 2, Phi-4
        out.append(f"model.rope_base={int(spec['theta'])}")
    if spec["hf"].startswith("gemma"):  # 0.6.1's names: head_dim given, sliding_window_size
        sizes = tiny_sizes(cfg)
        out.append(f"model.head_dim={sizes['embed_dim'] // sizes['num_heads']}")
        if spec.get("window"):
            out.append(f"model.sliding_window_size={spec['window']}")
    elif spec.get("window"):
        out.append(f"model.sliding_window={spec['window']}")
    if family == "llama3_2" or spec["hf"] == "qwen2":
        out.append(f"model.tie_word_embeddings={spec['tied']}")
    if name.startswith("qlora_"):
        out.append("model.quantize_base=True")
    return out


def run_overrides(recipe: str, cfg: dict, family: str, work: Path) -> list[str]:
    """Every override one run needs (see the module docstring)."""
    out = [f"output_dir={work / 'out'}", "device=cpu", "dtype=fp32"]
    out += model_overrides(cfg, family)
    out += write_tokenizer(FAMILIES[family]["tokenizer"], work.parent)
    out.append(f"tokenizer.max_seq_len={MAX_SEQ_LEN}")
    out += write_checkpoint(cfg, family, work.parent)
    if "ref_checkpointer" in cfg:  # full DPO's frozen reference: the same weights
        out += write_checkpoint(cfg, family, work.parent, key="ref_checkpointer")
    if recipe in ("generate", "dev/generate_v2"):
        return out + ["max_new_tokens=4"]
    if recipe == "eleuther_eval":
        return out + [f"include_path={REPO / 'tests' / 'recipes' / 'eval_assets'}", "tasks=[stories_mc]",
                      "limit=2", "batch_size=2", f"max_seq_length={MODEL_MAX_SEQ_LEN}"]
    data = cfg.get("dataset") or {}
    component = data.get("_component_", "") if isinstance(data, dict) else ""
    if component.startswith("torchtune.datasets.alpaca"):
        out += ["dataset.source=json", f"dataset.data_files={ALPACA}", "dataset.split=train[:64]"]
    elif component == "torchtune.datasets.stack_exchange_paired_dataset":
        out += ["dataset.source=json", f"dataset.data_files={write_stack_exchange_pairs(work / 'pairs.json')}"]
    return out + ["epochs=1", "max_steps_per_epoch=1", "batch_size=2", "gradient_accumulation_steps=1"]


# Runs that must end in a one-line refusal when run as one rank, and why that is right.
SINGLE_RANK_REFUSALS = {
    ("lora_finetune_distributed", "qlora_"): "QLoRA in the distributed recipe needs 2 or more processes",
}


def expected_refusal(recipe: str, cfg: dict) -> Optional[str]:
    """The one-line error a single-rank run of this config must end with, if any (the
    2-process run is tests/recipes/test_qlora_dora_recipes.py's)."""
    name = cfg["model"]["_component_"].rsplit(".", 1)[-1]
    for (r, prefix), message in SINGLE_RANK_REFUSALS.items():
        if recipe == r and name.startswith(prefix):
            return message
    return None


def run_signature(recipe: str, cfg: dict) -> str:
    """What decides the code a run takes once the tiny overrides apply: the recipe, the
    family, the kind of model builder, every component, the checkpoint file form and every
    on/off switch. Configs that differ only in numbers (model size, learning rate, batch
    size) or in paths take the same code path: one run covers them."""
    model = cfg["model"]["_component_"].rsplit(".", 1)[-1]
    kind = next((k for k in ("qlora_", "lora_") if model.startswith(k)), "full")
    if cfg["model"].get("use_dora"):
        kind += "dora"
    files = cfg.get("checkpointer", {}).get("checkpoint_files")
    form = "dict" if isinstance(files, dict) else Path(str(files[0] if files else "")).suffix

    def switches(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from switches(value, f"{path}.{key}")
        elif isinstance(node, list) and not path.startswith((".model", ".checkpointer")):
            yield path, "list"
        elif isinstance(node, bool) or (isinstance(node, str) and path.endswith("_component_")):
            if not path.startswith(".model."):
                yield path, node

    return json.dumps([RECIPES[recipe], family_of(cfg), kind, form, sorted(switches(cfg))])
