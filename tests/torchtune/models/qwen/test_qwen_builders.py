"""Qwen 2.5 / Qwen 3 builders: published sizes (exact parameter counts on the meta device),
state-dict names the checkpoint key maps rely on, and LoRA freezing."""

import inspect

import pytest
import torch

import torchtune.models.qwen2_5 as qwen2_5_pkg
import torchtune.models.qwen3 as qwen3_pkg
from torchtune.models.qwen2 import lora_qwen2, qwen2
from torchtune.models.qwen3 import lora_qwen3, qwen3
from torchtune.modules import TiedLinear
from torchtune.modules.peft import (
    LoRALinear,
    get_adapter_params,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)

# name -> (parameters, tied); counts are those of the published checkpoints.
COUNTS = {
    "qwen2_5_0_5b": (494_032_768, True),
    "qwen2_5_1_5b_base": (1_543_714_304, True),
    "qwen2_5_1_5b_instruct": (1_543_714_304, True),
    "qwen2_5_3b": (3_085_938_688, True),
    "qwen2_5_7b_base": (7_615_616_512, False),
    "qwen2_5_7b_instruct": (7_615_616_512, False),
    "qwen2_5_14b_base": (14_770_033_664, False),
    "qwen2_5_14b_instruct": (14_770_033_664, False),
    "qwen2_5_32b_base": (32_763_876_352, False),
    "qwen2_5_32b_instruct": (32_763_876_352, False),
    "qwen2_5_72b_base": (72_706_203_648, False),
    "qwen2_5_72b_instruct": (72_706_203_648, False),
    "qwen3_0_6b": (596_049_920, True),
    "qwen3_1_7b": (1_720_574_976, True),
    "qwen3_4b": (4_022_468_096, True),
    "qwen3_8b": (8_190_735_360, False),
    "qwen3_14b": (14_768_307_200, False),
    "qwen3_32b": (32_762_123_264, False),
}


def _builder(name):
    return getattr(qwen2_5_pkg if "qwen2_5" in name else qwen3_pkg, name)


@pytest.mark.parametrize("name", list(COUNTS))
def test_published_parameter_counts(name):
    count, tied = COUNTS[name]
    with torch.device("meta"):
        model = _builder(name)()
    assert sum(p.numel() for p in model.parameters()) == count
    assert isinstance(model.output, TiedLinear) == tied
    assert ("output.weight" in model.state_dict()) == (not tied)
    # The LoRA twin has the same base parameters plus only adapters.
    lora_builder = _builder("lora_" + name)
    assert ("apply_lora_to_output" in inspect.signature(lora_builder).parameters) == (not tied)
    with torch.device("meta"):
        lora = lora_builder(["q_proj", "v_proj"])
    adapters = get_adapter_params(lora)
    assert sum(p.numel() for n, p in lora.named_parameters() if n not in adapters) == count


def test_every_exported_builder_is_tested():
    exported = {
        n for n in qwen2_5_pkg.__all__ + qwen3_pkg.__all__ if not n.startswith(("lora_", "qlora_"))
    }
    assert exported - {"qwen3", "qwen2_5_tokenizer", "qwen3_tokenizer"} == set(COUNTS)


def test_state_dict_names_and_shapes():
    with torch.device("meta"):
        q25 = qwen2_5_pkg.qwen2_5_0_5b()
        q3 = qwen3_pkg.qwen3_0_6b()
    sd = q25.state_dict()
    assert sd["layers.0.attn.q_proj.bias"].shape == (896,)
    assert sd["layers.0.attn.k_proj.bias"].shape == (128,)
    assert sd["layers.0.attn.v_proj.bias"].shape == (128,)
    assert "layers.0.attn.output_proj.bias" not in sd
    assert not any("_norm.scale" in k and ".attn." in k for k in sd)
    sd = q3.state_dict()
    assert sd["layers.0.attn.q_proj.weight"].shape == (16 * 128, 1024)
    assert sd["layers.0.attn.k_proj.weight"].shape == (8 * 128, 1024)
    assert sd["layers.0.attn.output_proj.weight"].shape == (1024, 16 * 128)
    assert sd["layers.0.attn.q_norm.scale"].shape == (128,)
    assert sd["layers.0.attn.k_norm.scale"].shape == (128,)
    assert not any(k.endswith("proj.bias") for k in sd)
    assert q3.layers[0].attn.head_dim == 128


def test_qwen3_options():
    model = qwen3(vocab_size=32, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16,
                  intermediate_dim=24, max_seq_len=8, head_dim=12, q_proj_bias=True,
                  k_norm=False)
    sd = model.state_dict()
    assert sd["layers.0.attn.q_proj.bias"].shape == (24,)
    assert "layers.0.attn.k_proj.bias" not in sd and "layers.0.attn.v_proj.bias" not in sd
    assert "layers.0.attn.q_norm.scale" in sd and "layers.0.attn.k_norm.scale" not in sd
    assert model(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 32)
    with pytest.raises(ValueError, match="head_dim"):
        qwen3(vocab_size=32, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16,
              intermediate_dim=24, max_seq_len=8, head_dim=7)


TINY = dict(vocab_size=48, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
            max_seq_len=16, intermediate_dim=40)


@pytest.mark.parametrize("builder,extra", [(lora_qwen2, {}), (lora_qwen3, {"head_dim": 12})])
def test_lora_builders_freeze_and_load_a_base_checkpoint(builder, extra):
    model = builder(["q_proj", "k_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True,
                    lora_rank=4, lora_alpha=8.0, **TINY, **extra)
    adapters = get_adapter_params(model)
    assert len(adapters) == 2 * 2 * 7  # layers x (a, b) x (q, k, v, o, w1, w2, w3)
    set_trainable_params(model, adapters)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapters)
    q = model.layers[0].attn.q_proj
    assert isinstance(q, LoRALinear)
    sd = model.state_dict()
    if builder is lora_qwen2:  # the bias sits on the frozen base layer, under the base name
        assert q.bias is not None and not q.bias.requires_grad
        assert "layers.0.attn.q_proj.bias" in sd and "layers.0.attn.v_proj.bias" in sd
        assert model.layers[0].attn.output_proj.bias is None
    else:
        assert q.bias is None
        assert not model.layers[0].attn.q_norm.scale.requires_grad
        assert sd["layers.1.attn.k_norm.scale"].shape == (12,)
    base_sd = {k: v for k, v in sd.items() if ".lora_" not in k}
    missing, unexpected = model.load_state_dict(base_sd, strict=False)
    assert set(missing) == set(adapters)
    validate_missing_and_unexpected_for_lora(model, base_missing=missing,
                                             base_unexpected=unexpected)


def test_lora_base_sd_names_equal_the_base_models():
    base = qwen2(**TINY, tie_word_embeddings=True)
    lora = lora_qwen2(["q_proj", "k_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True,
                      lora_rank=4, lora_alpha=8.0, tie_word_embeddings=True, **TINY)
    lora_base = {k: v.shape for k, v in lora.state_dict().items() if ".lora_" not in k}
    assert lora_base == {k: v.shape for k, v in base.state_dict().items()}


def test_lora_on_a_tied_output_is_refused_and_untied_output_takes_it():
    with pytest.raises(ValueError, match="tied"):
        lora_qwen3(["q_proj"], apply_lora_to_output=True, tie_word_embeddings=True,
                   lora_rank=4, lora_alpha=8.0, **TINY)
    model = lora_qwen2(["q_proj"], apply_lora_to_output=True, lora_rank=4, lora_alpha=8.0,
                       **TINY)
    assert isinstance(model.output, LoRALinear)
    with pytest.raises(ValueError, match="Unknown lora_attn_modules"):
        lora_qwen2(["w1"], lora_rank=4, lora_alpha=8.0, **TINY)
