"""Adapter helpers: listing, freezing, checkpoint validation and merging."""

import pytest
import torch

from torchtune.models.llama2 import llama2, lora_llama2
from torchtune.modules.peft import (
    LoRALinear,
    get_adapter_params,
    get_merged_lora_ckpt,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)

SIZES = dict(vocab_size=30, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=16,
             max_seq_len=16, intermediate_dim=24)


def lora_model(**kwargs):
    args = dict(lora_attn_modules=["q_proj", "v_proj"], lora_rank=2, lora_alpha=4.0)
    args.update(kwargs)
    return lora_llama2(**args, **SIZES)


def test_get_adapter_params_lists_exactly_the_lora_weights():
    model = lora_model(apply_lora_to_output=True)
    names = set(get_adapter_params(model))
    expected = {f"layers.{i}.attn.{m}.lora_{ab}.weight"
                for i in range(2) for m in ("q_proj", "v_proj") for ab in "ab"}
    expected |= {"output.lora_a.weight", "output.lora_b.weight"}
    assert names == expected
    assert get_adapter_params(model)["output.lora_a.weight"] is model.output.lora_a.weight


def test_set_trainable_params_freezes_everything_else():
    model = lora_model(apply_lora_to_mlp=True)
    adapter = get_adapter_params(model)
    set_trainable_params(model, adapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter) and len(trainable) == 2 * 2 * 5
    with pytest.raises(ValueError, match="'nope.weight' is not a parameter"):
        set_trainable_params(model, ["nope.weight"])


def test_validation_accepts_base_load_and_names_bad_keys():
    model = lora_model()
    base_sd = llama2(**SIZES).state_dict()
    missing, unexpected = model.load_state_dict(base_sd, strict=False)
    validate_missing_and_unexpected_for_lora(
        model, base_missing=missing, base_unexpected=unexpected)
    adapter_sd = {k: v.detach() for k, v in get_adapter_params(model).items()}
    lora_missing, lora_unexpected = model.load_state_dict(adapter_sd, strict=False)
    validate_missing_and_unexpected_for_lora(
        model, lora_missing=lora_missing, lora_unexpected=lora_unexpected)

    with pytest.raises(ValueError, match="missing the non-adapter key 'norm.scale'"):
        validate_missing_and_unexpected_for_lora(model, base_missing=missing + ["norm.scale"])
    with pytest.raises(ValueError, match="has the key 'extra.weight'"):
        validate_missing_and_unexpected_for_lora(model, base_unexpected=["extra.weight"])
    key = "layers.0.attn.q_proj.lora_a.weight"
    with pytest.raises(ValueError, match=f"missing the adapter key '{key}'"):
        validate_missing_and_unexpected_for_lora(model, lora_missing=[key])


def test_merge_folds_the_update_into_the_weight():
    lora = LoRALinear(3, 2, rank=1, alpha=2.0)
    with torch.no_grad():
        lora.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
        lora.lora_a.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        lora.lora_b.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    sd = {f"m.{k}": v for k, v in lora.state_dict().items()}
    merged = get_merged_lora_ckpt(sd, rank=1, alpha=2.0)
    assert set(merged) == {"m.weight"}
    expected = torch.tensor([[3.0, 4.0, 6.0], [-2.0, -3.0, -6.0]])
    torch.testing.assert_close(merged["m.weight"], expected, atol=0, rtol=0)
    assert torch.equal(sd["m.weight"], lora.weight)  # input untouched


def test_merge_errors():
    sd = {"m.weight": torch.zeros(2, 3), "m.lora_a.weight": torch.zeros(1, 3)}
    with pytest.raises(ValueError, match="'m.lora_b.weight' is missing"):
        get_merged_lora_ckpt(sd, rank=1, alpha=1.0)
    sd["m.lora_b.weight"] = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="its rank is 1, but rank=4"):
        get_merged_lora_ckpt(sd, rank=4, alpha=1.0)
    with pytest.raises(ValueError, match="'n.lora_b.weight': its lora_a is missing"):
        get_merged_lora_ckpt({"n.weight": torch.zeros(1), "n.lora_b.weight": torch.zeros(1)},
                             rank=1, alpha=1.0)


def test_unknown_lora_module_is_rejected():
    with pytest.raises(ValueError, match=r"Unknown lora_attn_modules \['wq'\]"):
        lora_model(lora_attn_modules=["q_proj", "wq"])


def test_lora_module_names_follow_the_builder_arguments():
    from torchtune.modules.peft import get_lora_module_names

    assert get_lora_module_names(["q_proj", "v_proj"], False, False) == ["q_proj", "v_proj"]
    assert get_lora_module_names(("k_proj",), True, True) == ["k_proj", "w1", "w2", "w3", "output"]
