"""Streamed loading: ``load_checkpoint(stream_model=True)`` yields the model one decoder layer
at a time, and a consumer that drops each group holds at most one layer of the file."""

import gc
import json
import os
import subprocess
import sys
import textwrap
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


# A QLoRA model (every decoder linear in NF4) loads a 4-layer fp32 HF checkpoint, streamed or
# whole, each in a fresh process (one load's freed heap cannot hide the other's peak), its
# peak measured from the resident size before it (VmHWM reset through /proc/self/clear_refs).
# Both pay torchao's quantization workspace; the whole load also holds every layer of the
# file at once.
_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    from torchtune import training
    from torchtune.models.llama2 import llama2, lora_llama2
    from torchtune.models.llama2._convert_weights import tune_to_hf
    from torchtune.training.checkpointing import FullModelHFCheckpointer

    folder, mode = sys.argv[1], sys.argv[2]
    dims = dict(vocab_size=256, num_layers=4, num_heads=8, num_kv_heads=8, embed_dim=1024,
                intermediate_dim=1024, max_seq_len=64)
    with torch.device("meta"):
        shapes = llama2(**dims).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: 0.02 * torch.randn(v.shape, generator=g) for k, v in shapes.items()}
    save_file(tune_to_hf(sd, num_heads=8, num_kv_heads=8, dim=1024), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "hidden_size": 1024, "num_attention_heads": 8}, f)
    size = sum(v.numel() * v.element_size() for v in sd.values())
    layer = sum(v.numel() * v.element_size() for k, v in sd.items() if k.startswith("layers.0."))
    del sd

    model = lora_llama2(["q_proj", "v_proj"], **dims, lora_rank=8, lora_alpha=16, quantize_base=True)
    ckpt = FullModelHFCheckpointer(folder, ["model.safetensors"], "LLAMA2", os.path.join(folder, "out"))

    def peak_of(load):
        status = lambda: {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("Vm")}
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status()["VmRSS"]
        with training.activations_in_own_pages(torch.device("cpu")):  # as the recipe loads
            load()
        return status()["VmHWM"] - before

    if mode == "streamed":
        peak = peak_of(lambda: training.load_state_dict_in_groups(model, ckpt.load_checkpoint(stream_model=True)["model"]))
    else:
        peak = peak_of(lambda: model.load_state_dict(ckpt.load_checkpoint()["model"], strict=False))
    print(json.dumps({"size": size, "layer": layer, mode: peak}))
    """
)


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_a_streamed_qlora_load_never_holds_the_whole_full_precision_model(tmp_path):
    m = {}
    for mode in ("streamed", "whole"):
        folder = tmp_path / mode
        folder.mkdir()
        out = subprocess.run([sys.executable, "-c", _PROBE, str(folder), mode], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        m.update(json.loads(out.stdout.strip().splitlines()[-1]))
    mib = {k: round(v / 2**20) for k, v in m.items()}
    # The whole load sees every layer at once; the streamed one at most one or two of them.
    assert m["whole"] - m["streamed"] >= m["size"] - 2 * m["layer"], mib
