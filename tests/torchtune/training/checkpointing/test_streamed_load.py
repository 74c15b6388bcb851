"""Streamed loading: ``load_checkpoint(stream_model=True)`` yields the model one decoder layer
at a time, and a consumer that drops each group holds at most one layer of the file."""

import gc
import json
import weakref

import pytest
import torch

from torchtune import training
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)
from torchtune.training.checkpointing._meta_shards import split

from conftest import TINY, tiny_model, tiny_tune_sd, write_hf_checkpoint, write_meta_checkpoint


def _hf(folder, fmt, n_shards):
    names, _, _ = write_hf_checkpoint(folder, fmt=fmt, n_shards=n_shards, index=False)
    return FullModelHFCheckpointer(str(folder), names, "LLAMA2", str(folder / "out"))


def _meta(folder, ranks):
    meta = write_meta_checkpoint(folder)
    names = ["consolidated.00.pth"]
    if ranks > 1:
        names = [f"consolidated.{r:02d}.pth" for r in range(ranks)]
        for name, part in zip(names, split(meta, ranks)):
            torch.save(part, folder / name)
    return FullModelMetaCheckpointer(str(folder), names, "LLAMA2", str(folder / "out"))


def _torchtune(folder):
    folder.mkdir()
    sd = tiny_tune_sd()
    keys = list(sd)
    torch.save({k: sd[k] for k in keys[:5]}, folder / "a.pt")  # files that cut across layers
    torch.save({k: sd[k] for k in keys[5:]}, folder / "b.pt")
    return FullModelTorchTuneCheckpointer(str(folder), ["a.pt", "b.pt"], "LLAMA2", str(folder / "out"))


CHECKPOINTERS = {
    "hf_safetensors_2_shards": lambda d: _hf(d, "safetensors", 2),
    "hf_bin": lambda d: _hf(d, "bin", 1),
    "meta": lambda d: _meta(d, 1),
    "meta_2_ranks": lambda d: _meta(d, 2),
    "torchtune_2_files": _torchtune,
}


def _layer(key):
    parts = key.split(".")
    return int(parts[1]) if parts[0] == "layers" else None


@pytest.mark.parametrize("kind", sorted(CHECKPOINTERS))
def test_groups_are_the_layers_and_join_to_the_whole_checkpoint(tmp_path, kind):
    ckpt = CHECKPOINTERS[kind](tmp_path / "ckpt")
    groups = list(ckpt.load_checkpoint(stream_model=True)["model"])
    # First what lies outside the layers, then one group per layer, in order.
    assert [{_layer(k) for k in g} for g in groups] == [{None}] + [{n} for n in range(TINY.layers)]
    whole = ckpt.load_checkpoint()["model"]
    joined = {k: v for g in groups for k, v in g.items()}
    assert joined.keys() == whole.keys() == tiny_tune_sd().keys()
    for key, value in tiny_tune_sd().items():
        assert torch.equal(joined[key], value), key
        assert torch.equal(whole[key], value), key


@pytest.mark.parametrize("kind", ["hf_safetensors_2_shards", "meta_2_ranks"])
def test_a_group_is_gone_before_the_next_is_read(tmp_path, kind):
    """The reader keeps no reference to a group it has handed out."""
    ckpt = CHECKPOINTERS[kind](tmp_path / "ckpt")
    groups = ckpt.load_checkpoint(stream_model=True)["model"]
    previous = []
    for group in groups:
        gc.collect()
        assert all(ref() is None for ref in previous)  # the last group is freed by now
        previous = [weakref.ref(t) for t in group.values()]
        del group


def test_a_file_that_cannot_be_memory_mapped_is_read_once_not_once_per_layer(tmp_path, monkeypatch):
    """torch.save's pre-1.6 format has no zip container to map: a streamed load reads it
    whole, once, and keeps it for the load, instead of once per group."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save(tiny_tune_sd(), folder / "old.pt", _use_new_zipfile_serialization=False)
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(kwargs.get("mmap", False))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    ckpt = FullModelTorchTuneCheckpointer(str(folder), ["old.pt"], "LLAMA2", str(folder / "out"))
    groups = list(ckpt.load_checkpoint(stream_model=True)["model"])
    assert len(groups) == TINY.layers + 1
    assert reads.count(False) == 2  # the key list, then the tensors (the mmap attempts fail)
    joined = {k: v for g in groups for k, v in g.items()}
    assert all(torch.equal(joined[k], v) for k, v in tiny_tune_sd().items())


def test_loading_in_groups_reports_keys_as_load_state_dict_does(tmp_path):
    ckpt = _hf(tmp_path / "ckpt", "safetensors", 2)
    model = tiny_model(lora=True, lora_attn_modules=["q_proj"], lora_rank=2, lora_alpha=4)
    result = training.load_state_dict_in_groups(model, ckpt.load_checkpoint(stream_model=True)["model"])
    reference = tiny_model(lora=True, lora_attn_modules=["q_proj"], lora_rank=2, lora_alpha=4)
    expected = reference.load_state_dict(tiny_tune_sd(), strict=False)
    assert result.missing_keys == expected.missing_keys  # the adapters, in the model's order
    assert result.unexpected_keys == [] and result.dtype == torch.float32
    for key, value in tiny_tune_sd().items():
        assert torch.equal(model.state_dict()[key], value), key

    extra = [{"layers.0.attn.q_proj.nonsense": torch.zeros(1)}, {"tok_embeddings.weight": tiny_tune_sd()["tok_embeddings.weight"]}]
    result = training.load_state_dict_in_groups(tiny_model(), iter(extra))
    assert result.unexpected_keys == ["layers.0.attn.q_proj.nonsense"]
    assert "tok_embeddings.weight" not in result.missing_keys and "norm.scale" in result.missing_keys


def test_a_streamed_qlora_load_keeps_no_group_alive(tmp_path):
    """A QLoRA model (every decoder linear in NF4) loaded group by group keeps no reference
    to a group once the next is read: its NF4 weights are new tensors, so the load holds one
    layer of the file at a time. The physical peak this gives (RSS depends on the page
    cache of the mapped file, too noisy for a test) is benchmarks/bench_qlora_load.py's."""
    from safetensors.torch import save_file

    from torchtune.models.llama2 import lora_llama2
    from torchtune.models.llama2._convert_weights import tune_to_hf
    from torchtune.modules.low_precision._nf4 import is_nf4

    dims = dict(vocab_size=256, num_layers=3, num_heads=4, num_kv_heads=4, embed_dim=128,
                intermediate_dim=128, max_seq_len=64)  # 128 x 128: whole NF4 blocks and scaler groups
    model = lora_llama2(["q_proj", "v_proj"], **dims, lora_rank=4, lora_alpha=8, quantize_base=True)
    g = torch.Generator().manual_seed(0)
    sd = {k: 0.02 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items() if "lora_" not in k}
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file(tune_to_hf(sd, num_heads=4, num_kv_heads=4, dim=128), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 3,
        "intermediate_size": 128, "vocab_size": 256, "rms_norm_eps": 1e-5,
    }))
    ckpt = FullModelHFCheckpointer(str(folder), ["model.safetensors"], "LLAMA2", str(folder / "out"))
    previous, seen = [], 0

    def watched(groups):
        nonlocal previous, seen
        for group in groups:
            gc.collect()
            assert all(ref() is None for ref in previous), f"group {seen - 1} outlived its load"
            previous = [weakref.ref(t) for t in group.values()]
            seen += 1
            yield group
            del group

    result = training.load_state_dict_in_groups(model, watched(ckpt.load_checkpoint(stream_model=True)["model"]))
    assert seen == 1 + dims["num_layers"] and result.unexpected_keys == []
    assert is_nf4(model.layers[2].mlp.w1.weight)
