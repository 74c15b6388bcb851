"""The per-family generation configs (recipes/configs/<family>/generation.yaml).

Most of them build the model with the family's component builder and a shorter
max_seq_len (the KV cache and causal mask generation allocates grow with it); the first
test checks that each is otherwise exactly the published size it names. The second runs
`tune run generate --config llama3_2/generation` end to end on a tiny random Llama 3.2-style
model written in HF format, and checks the greedy text against transformers'.
"""

import os
import subprocess

import pytest
import torch

from torchtune import config
from torchtune.config import resolve_component
from torchtune.modules import RMSNorm

from llama3_recipe_helpers import TINY, write_hf_folder
from recipe_helpers import REPO, tune_command

# config -> the size-named builder whose model it must build (max_seq_len aside)
GENERATION_CONFIGS = {
    "llama2/generation": "torchtune.models.llama2.llama2_7b",
    "code_llama2/generation": "torchtune.models.code_llama2.code_llama2_7b",
    "llama3/generation": "torchtune.models.llama3.llama3_8b",
    "llama3_1/generation": "torchtune.models.llama3_1.llama3_1_8b",
    "llama3_2/generation": "torchtune.models.llama3_2.llama3_2_1b",
    "llama3_3/generation": "torchtune.models.llama3_3.llama3_3_70b",
    "qwen2_5/generation": "torchtune.models.qwen2_5.qwen2_5_1_5b_instruct",
    "qwen3/generation": "torchtune.models.qwen3.qwen3_1_7b",
}


def describe(model) -> dict:
    """Everything that decides a model's outputs except max_seq_len: parameter names and
    shapes, RoPE, norms, heads, tied output."""
    rope = model.layers[0].attn.pos_embeddings
    return {
        "params": {n: tuple(p.shape) for n, p in model.named_parameters()},
        "rope": (rope.dim, float(rope.base), rope.scaling),
        "eps": sorted({m.eps for m in model.modules() if isinstance(m, RMSNorm)}),
        "attn": {(a.num_heads, a.num_kv_heads, a.head_dim, a.attn_dropout)
                 for a in (layer.attn for layer in model.layers)},
        "output": type(model.output).__name__,
    }


@pytest.mark.parametrize("name", sorted(GENERATION_CONFIGS))
def test_generation_config_builds_the_published_model(name):
    cfg = config.load_and_override(name, [])
    with torch.device("meta"):
        ours = config.instantiate(cfg.model)
        published = resolve_component(GENERATION_CONFIGS[name])()
    assert describe(ours) == describe(published)
    assert ours.max_seq_len <= published.max_seq_len
    assert "\n# Memory:" in (REPO / "recipes" / "configs" / f"{name}.yaml").read_text()


def test_llama3_2_generation_config_runs_and_matches_transformers(tmp_path):
    pytest.importorskip("transformers")
    folder = tmp_path / "Llama-3.2-tiny-Instruct"
    hf, shards = write_hf_folder(folder)
    assert (folder / "model.safetensors.index.json").is_file() and len(shards) > 1

    sizes = dict(vocab_size=TINY.vocab, num_layers=TINY.layers, num_heads=TINY.n_h,
                 num_kv_heads=TINY.n_kv, embed_dim=TINY.dim, intermediate_dim=TINY.hidden,
                 max_seq_len=TINY.max_seq_len)
    overrides = [f"model.{k}={v}" for k, v in sizes.items()] + [
        f"tokenizer.path={folder / 'original' / 'tokenizer.model'}",
        f"checkpointer.checkpoint_dir={folder}",
        "checkpointer.checkpoint_files=[model.safetensors.index.json]",
        f"checkpointer.output_dir={tmp_path / 'out'}",
        "device=cpu", "dtype=fp32", "temperature=0", "max_new_tokens=12",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(tune_command("generate", "llama3_2/generation", overrides), cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]

    # The same prompt through our tokenizer (the config's system + user turns and an open
    # assistant header), decoded greedily by transformers on the same weights.
    from torchtune.data import Message
    from torchtune.models.llama3 import llama3_tokenizer

    cfg = config.load_and_override("llama3_2/generation", [])
    tok = llama3_tokenizer(str(folder / "original" / "tokenizer.model"))
    messages = [Message("system", cfg.prompt.system), Message("user", cfg.prompt.user),
                Message("assistant", "")]
    prompt, _ = tok.tokenize_messages(messages, add_end_tokens=False)
    with torch.no_grad():
        expected = hf.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False, max_new_tokens=12, eos_token_id=list(tok.stop_tokens),
            pad_token_id=tok.pad_id,
        )[0].tolist()
    assert out.stdout == tok.decode(expected) + "\n"


def test_every_family_generation_config_is_checked_above():
    configs = REPO / "recipes" / "configs"
    on_disk = {str(p.relative_to(configs))[: -len(".yaml")] for p in configs.glob("*/generation.yaml")}
    # hf/generation reads everything from the model folder: tests/recipes/test_hf_configs.py.
    assert on_disk - {"stories260K/generation", "hf/generation"} == set(GENERATION_CONFIGS)
