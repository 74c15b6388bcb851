"""Llama 3.1 / 3.2 HF checkpoints written by transformers: load, save, and the saved folder
read back by transformers with identical weights."""

import glob
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from torchtune._errors import UserValueError
from torchtune.training.checkpointing import FullModelHFCheckpointer

from llama3_ckpt_helpers import TINY, write_hf_folder


def safetensors_keys(folder):
    keys = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(path, "pt") as f:
            keys.update({k: os.path.basename(path) for k in f.keys()})
    return keys


def hf_to_meta_rows(w, n_heads):
    """The inverse of ``permute`` in transformers' convert_llama_weights_to_hf.py, which maps
    Meta's q/k row order to HF's: ``w.view(n, dim1 // n // 2, 2, dim2).transpose(1, 2)``."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def index_files(folder):
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        return json.load(f)["weight_map"]


@pytest.mark.parametrize("tied,model_type", [(False, "LLAMA3"), (True, "LLAMA3_2")])
def test_transformers_checkpoint_round_trips(tmp_path, tied, model_type):
    from transformers import LlamaForCausalLM

    src = tmp_path / "in"
    reference = write_hf_folder(str(src), tied=tied)
    names = sorted(set(index_files(src).values()))
    assert len(names) > 1  # really sharded
    assert ("lm_head.weight" in safetensors_keys(src)) is not tied

    ckpt = FullModelHFCheckpointer(str(src), names, model_type, str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    ref = reference.state_dict()
    assert "tok_embeddings.weight" in model and ("output.weight" in model) is not tied
    assert len(model) == 2 + 9 * TINY.layers + (0 if tied else 1)
    # q/k rows back in Meta's interleaved order; the rest unchanged.
    assert torch.equal(model["layers.1.attn.q_proj.weight"],
                       hf_to_meta_rows(ref["model.layers.1.self_attn.q_proj.weight"], TINY.n_h))
    assert torch.equal(model["layers.0.attn.k_proj.weight"],
                       hf_to_meta_rows(ref["model.layers.0.self_attn.k_proj.weight"], TINY.n_kv))
    assert torch.equal(model["layers.0.attn.v_proj.weight"], ref["model.layers.0.self_attn.v_proj.weight"])

    ckpt.save_checkpoint({"model": model}, epoch=0)
    out = tmp_path / "out" / "epoch_0"
    # Same shards, same tensor->shard assignment; lm_head absent again for the tied model.
    assert safetensors_keys(out) == safetensors_keys(src)
    assert index_files(out) == index_files(src)
    loaded = LlamaForCausalLM.from_pretrained(str(out)).eval()
    got = loaded.state_dict()
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert torch.equal(got[key], value), key
    if tied:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 5, 9, 33]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)


def test_output_folder_carries_every_non_weight_file(tmp_path):
    src = tmp_path / "in"
    write_hf_folder(str(src), tied=False)
    (src / "pytorch_model.bin").write_bytes(b"stale other-format weights")
    (src / "checkpoint_manifest.json").write_text("{}")
    (src / "LICENSE").write_text("license text")
    names = sorted(set(index_files(src).values()))
    ckpt = FullModelHFCheckpointer(str(src), names, "LLAMA3", str(tmp_path / "out"))
    ckpt.save_checkpoint(ckpt.load_checkpoint(), epoch=0)
    out = tmp_path / "out" / "epoch_0"
    copied = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "README.md", "LICENSE"}
    assert set(os.listdir(out)) == copied | set(names) | {"model.safetensors.index.json"}
    for name in copied:
        assert (out / name).read_bytes() == (src / name).read_bytes(), name


def test_tied_checkpoint_with_lm_head_copy_keeps_it(tmp_path):
    src = tmp_path / "in"
    reference = write_hf_folder(str(src), tied=True)
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    for f in glob.glob(str(src / "model*.safetensors*")):
        os.remove(f)
    save_file(sd, str(src / "model.safetensors"), metadata={"format": "pt"})
    ckpt = FullModelHFCheckpointer(str(src), ["model.safetensors"], "LLAMA3_2", str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    assert "output.weight" not in model
    ckpt.save_checkpoint({"model": model}, epoch=0)
    with safe_open(str(tmp_path / "out" / "epoch_0" / "model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("lm_head.weight"), sd["model.embed_tokens.weight"])


def test_tied_checkpoint_whose_lm_head_differs_is_refused(tmp_path):
    src = tmp_path / "in"
    reference = write_hf_folder(str(src), tied=True)
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"] + 1
    for f in glob.glob(str(src / "model*.safetensors*")):
        os.remove(f)
    save_file(sd, str(src / "model.safetensors"))
    ckpt = FullModelHFCheckpointer(str(src), ["model.safetensors"], "LLAMA3_2", str(tmp_path / "out"))
    with pytest.raises(UserValueError, match="differs from the token embedding") as err:
        ckpt.load_checkpoint()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("tied,model_type,needle", [
    (True, "LLAMA3", "tie_word_embeddings true, but model_type LLAMA3 does not tie"),
    (False, "LLAMA3_2", "tie_word_embeddings false, but model_type LLAMA3_2 ties"),
])
def test_tie_mismatch_between_config_and_model_type_is_one_line(tmp_path, tied, model_type, needle):
    src = tmp_path / "in"
    write_hf_folder(str(src), tied=tied)
    with pytest.raises(UserValueError) as err:
        FullModelHFCheckpointer(str(src), ["model.safetensors.index.json"], model_type, str(tmp_path / "o"))
    assert needle in str(err.value) and "\n" not in str(err.value)
