"""Qwen 2 / 2.5 and Qwen 3 HF checkpoints written by transformers: load through the HF
checkpointer (model_type QWEN2 / QWEN3), every tensor checked against an independent
permutation, save, and the saved folder read back by transformers with identical weights;
a LoRA adapter written through the peft maps merges in peft as expected."""

import glob
import json
import os

import pytest
import torch
from safetensors import safe_open

from torchtune._errors import UserValueError
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)

VOCAB, DIM, LAYERS, HIDDEN = 64, 32, 2, 48
N_H, N_KV = 4, 2
QWEN3_HEAD_DIM = 12  # != DIM // N_H (8)


def head_dim(family):
    return QWEN3_HEAD_DIM if family == "qwen3" else DIM // N_H


def hf_model(family, tied, seed=0):
    import transformers

    common = dict(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=N_H, num_key_value_heads=N_KV, max_position_embeddings=128,
        rms_norm_eps=1e-6, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
    )
    if family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.Qwen3ForCausalLM(
            transformers.Qwen3Config(head_dim=QWEN3_HEAD_DIM, **common)
        )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms random too, so a dropped or unpermuted scale shows up
        for p in model.parameters():
            p.copy_((1.0 if p.dim() == 1 else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_folder(folder, family, tied):
    model = hf_model(family, tied)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        f.write('{"model_max_length": 128}')
    return model


def safetensors_keys(folder):
    keys = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(path, "pt") as f:
            keys.update({k: os.path.basename(path) for k in f.keys()})
    return keys


def index_json(folder):
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        return json.load(f)


def meta_from_hf(t, n_heads, hd):
    """Independent inverse of transformers' rotate-half permutation: internal (Meta) entry
    ``h*hd + 2j + p`` is HF entry ``h*hd + p*hd/2 + j`` (works on rows and on 1-D)."""
    idx = torch.tensor(
        [h * hd + p * (hd // 2) + j for h in range(n_heads) for j in range(hd // 2) for p in (0, 1)]
    )
    return t[idx]


def expected_internal(ref, family):
    """The internal state dict, by explicit names and explicit index arithmetic."""
    hd = head_dim(family)
    out = {"tok_embeddings.weight": ref["model.embed_tokens.weight"],
           "norm.scale": ref["model.norm.weight"]}
    if "lm_head.weight" in ref:
        out["output.weight"] = ref["lm_head.weight"]
    for i in range(LAYERS):
        hf, t = f"model.layers.{i}.", f"layers.{i}."
        out[t + "sa_norm.scale"] = ref[hf + "input_layernorm.weight"]
        out[t + "mlp_norm.scale"] = ref[hf + "post_attention_layernorm.weight"]
        out[t + "mlp.w1.weight"] = ref[hf + "mlp.gate_proj.weight"]
        out[t + "mlp.w2.weight"] = ref[hf + "mlp.down_proj.weight"]
        out[t + "mlp.w3.weight"] = ref[hf + "mlp.up_proj.weight"]
        out[t + "attn.output_proj.weight"] = ref[hf + "self_attn.o_proj.weight"]
        out[t + "attn.v_proj.weight"] = ref[hf + "self_attn.v_proj.weight"]
        out[t + "attn.q_proj.weight"] = meta_from_hf(ref[hf + "self_attn.q_proj.weight"], N_H, hd)
        out[t + "attn.k_proj.weight"] = meta_from_hf(ref[hf + "self_attn.k_proj.weight"], N_KV, hd)
        if family == "qwen2":
            out[t + "attn.v_proj.bias"] = ref[hf + "self_attn.v_proj.bias"]
            out[t + "attn.q_proj.bias"] = meta_from_hf(ref[hf + "self_attn.q_proj.bias"], N_H, hd)
            out[t + "attn.k_proj.bias"] = meta_from_hf(ref[hf + "self_attn.k_proj.bias"], N_KV, hd)
        else:
            out[t + "attn.q_norm.scale"] = meta_from_hf(ref[hf + "self_attn.q_norm.weight"], 1, hd)
            out[t + "attn.k_norm.scale"] = meta_from_hf(ref[hf + "self_attn.k_norm.weight"], 1, hd)
    return out


CASES = [("qwen2", False, "QWEN2"), ("qwen2", True, "QWEN2"),
         ("qwen3", False, "QWEN3"), ("qwen3", True, "QWEN3")]


@pytest.mark.parametrize("family,tied,model_type", CASES)
def test_transformers_checkpoint_round_trips(tmp_path, family, tied, model_type):
    import transformers

    cls = transformers.Qwen2ForCausalLM if family == "qwen2" else transformers.Qwen3ForCausalLM
    src = tmp_path / "in"
    reference = write_folder(str(src), family, tied)
    src_index = index_json(src)
    names = sorted(set(src_index["weight_map"].values()))
    assert len(names) > 1  # really sharded
    assert ("lm_head.weight" in safetensors_keys(src)) is not tied

    ckpt = FullModelHFCheckpointer(str(src), names, model_type, str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    ref = {k: v for k, v in reference.state_dict().items() if not (tied and k == "lm_head.weight")}
    expected = expected_internal(ref, family)
    assert set(model) == set(expected)
    for key, value in expected.items():
        assert torch.equal(model[key], value), key
    if family == "qwen3":
        assert model["layers.0.attn.q_proj.weight"].shape == (N_H * QWEN3_HEAD_DIM, DIM)

    ckpt.save_checkpoint({"model": model}, epoch=0)
    out = tmp_path / "out" / "epoch_0"
    # Same shards, same tensor->shard assignment, same index; lm_head absent for tied.
    assert safetensors_keys(out) == safetensors_keys(src)
    assert index_json(out)["weight_map"] == src_index["weight_map"]
    assert ("lm_head.weight" in safetensors_keys(out)) is not tied
    assert (out / "tokenizer_config.json").is_file() and (out / "config.json").is_file()
    loaded = cls.from_pretrained(str(out)).eval()
    got, full_ref = loaded.state_dict(), reference.state_dict()
    assert set(got) == set(full_ref)
    for key, value in full_ref.items():
        assert torch.equal(got[key], value), key
    ids = torch.tensor([[1, 5, 9, 33]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_converters_are_exact_inverses(family):
    from torchtune.training.checkpointing._utils import ModelType, get_converter

    conv = get_converter(ModelType.coerce(family.upper()))
    ref = hf_model(family, tied=False).state_dict()
    heads = dict(num_heads=N_H, num_kv_heads=N_KV, dim=DIM,
                 head_dim=QWEN3_HEAD_DIM if family == "qwen3" else None)
    back = conv.tune_to_hf(conv.hf_to_tune(ref, **heads), **heads)
    assert set(back) == set(ref)
    for k, v in ref.items():
        assert torch.equal(back[k], v), k
    # No Meta layout: meta_to_tune refuses; tune_to_meta is a key check only.
    with pytest.raises(UserValueError, match="no Meta-format"):
        conv.meta_to_tune({})
    internal = conv.hf_to_tune(ref, **heads)
    assert conv.tune_to_meta(internal) is internal
    with pytest.raises(ValueError, match="Unexpected key"):
        conv.tune_to_meta({"layers.0.attention.wq.weight": torch.zeros(1)})


@pytest.mark.parametrize("family,model_type", [("qwen2", "QWEN2"), ("qwen3", "QWEN3")])
def test_peft_adapter_merges_as_expected(tmp_path, family, model_type):
    import peft

    src = tmp_path / "in"
    reference = write_folder(str(src), family, tied=True)
    names = sorted(set(index_json(src)["weight_map"].values()))
    ckpt = FullModelHFCheckpointer(str(src), names, model_type, str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    hd, rank, alpha = head_dim(family), 2, 4.0
    g = torch.Generator().manual_seed(1)
    adapter = {}
    for i in range(LAYERS):
        for mod, rows in (("q_proj", N_H * hd), ("v_proj", N_KV * hd)):
            adapter[f"layers.{i}.attn.{mod}.lora_a.weight"] = torch.randn(rank, DIM, generator=g)
            adapter[f"layers.{i}.attn.{mod}.lora_b.weight"] = torch.randn(rows, rank, generator=g)
    ckpt.save_checkpoint(
        {"model": model, "adapter": adapter,
         "adapter_config": {"r": rank, "lora_alpha": alpha, "target_modules": ["q_proj", "v_proj"]}},
        epoch=0,
    )
    peft_dir = tmp_path / "out" / "adapter_0_peft"
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    merged = peft.PeftModel.from_pretrained(reference, str(peft_dir)).merge_and_unload()
    got = merged.state_dict()
    base = hf_model(family, tied=True).state_dict()  # same seed: the unmerged weights
    scale = alpha / rank
    for i in range(LAYERS):
        a, b = (adapter[f"layers.{i}.attn.q_proj.lora_{x}.weight"] for x in "ab")
        # Internal delta B @ A is in Meta row order: the HF delta is its rows permuted
        # back, i.e. meta_from_hf(hf_delta) == B @ A.
        key = f"model.layers.{i}.self_attn.q_proj.weight"
        hf_delta = got[key] - base[key]
        torch.testing.assert_close(meta_from_hf(hf_delta, N_H, hd), scale * (b @ a))
        a, b = (adapter[f"layers.{i}.attn.v_proj.lora_{x}.weight"] for x in "ab")
        key = f"model.layers.{i}.self_attn.v_proj.weight"
        torch.testing.assert_close(got[key] - base[key], scale * (b @ a))
        for untouched in ("k_proj", "o_proj"):
            key = f"model.layers.{i}.self_attn.{untouched}.weight"
            assert torch.equal(got[key], base[key])


@pytest.mark.parametrize("model_type", ["QWEN2", "QWEN3"])
def test_meta_checkpointer_is_refused(tmp_path, model_type):
    with pytest.raises(UserValueError, match=f"model_type {model_type} has no Meta-format"):
        FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], model_type, str(tmp_path / "o"))


def test_config_of_other_family_is_refused(tmp_path):
    src = tmp_path / "in"
    write_folder(str(src), "qwen3", tied=False)
    names = sorted(set(index_json(src)["weight_map"].values()))
    with pytest.raises(UserValueError, match="model_type 'qwen3'"):
        FullModelHFCheckpointer(str(src), names, "QWEN2", str(tmp_path / "out"))


def test_torchtune_checkpointer_accepts_qwen3_internal_keys(tmp_path):
    from torchtune.training.checkpointing._utils import ModelType, get_converter

    ref = hf_model("qwen3", tied=False).state_dict()
    internal = get_converter(ModelType.QWEN3).hf_to_tune(
        ref, num_heads=N_H, num_kv_heads=N_KV, dim=DIM, head_dim=QWEN3_HEAD_DIM
    )
    (tmp_path / "in").mkdir()
    torch.save(internal, tmp_path / "in" / "model.pt")
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path / "in"), ["model.pt"], "QWEN3", str(tmp_path / "out"))
    loaded = ckpt.load_checkpoint()["model"]
    assert set(loaded) == set(internal)
