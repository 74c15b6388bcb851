"""Llama 3.x builders: published sizes (built on the meta device), exports, tied output and
LoRA wiring."""

import pytest
import torch

import torchtune.models.llama3 as llama3_pkg
import torchtune.models.llama3_1 as llama3_1_pkg
import torchtune.models.llama3_2 as llama3_2_pkg
import torchtune.models.llama3_3 as llama3_3_pkg
from torchtune.models.llama3_1 import lora_llama3_1
from torchtune.models.llama3_2 import llama3_2, lora_llama3_2
from torchtune.modules import TiedLinear
from torchtune.modules.peft import (
    LoRALinear,
    get_adapter_params,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)

# Published totals (HF ``num_parameters()`` of the released checkpoints; 70B = 3.1 70B).
PARAMS = {
    "llama3_1_8b": 8_030_261_248,
    "llama3_2_1b": 1_235_814_400,
    "llama3_2_3b": 3_212_749_824,
    "llama3_3_70b": 70_553_706_496,
    "llama3_8b": 8_030_261_248,
    "llama3_1_70b": 70_553_706_496,
}
PACKAGES = {"llama3": llama3_pkg, "llama3_1": llama3_1_pkg, "llama3_2": llama3_2_pkg,
            "llama3_3": llama3_3_pkg}
# name -> (package, layers, heads, kv heads, dim, hidden, max_seq_len, rope scale, tied)
SIZES = {
    "llama3_8b": ("llama3", 32, 32, 8, 4096, 14336, 8192, None, False),
    "llama3_70b": ("llama3", 80, 64, 8, 8192, 28672, 8192, None, False),
    "llama3_1_8b": ("llama3_1", 32, 32, 8, 4096, 14336, 131072, 8, False),
    "llama3_1_70b": ("llama3_1", 80, 64, 8, 8192, 28672, 131072, 8, False),
    "llama3_1_405b": ("llama3_1", 126, 128, 8, 16384, 53248, 131072, 8, False),
    "llama3_2_1b": ("llama3_2", 16, 32, 8, 2048, 8192, 131072, 32, True),
    "llama3_2_3b": ("llama3_2", 28, 24, 8, 3072, 8192, 131072, 32, True),
    "llama3_3_70b": ("llama3_3", 80, 64, 8, 8192, 28672, 131072, 8, False),
}


def count(model):
    return sum(p.numel() for p in model.parameters())  # shared parameters counted once


@pytest.mark.parametrize("name", list(PARAMS))
def test_published_parameter_counts(name):
    pkg = PACKAGES[SIZES[name][0]]
    with torch.device("meta"):
        model = getattr(pkg, name)()
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated
    n = count(model)
    print(f"{name}: {n:,} parameters")
    assert n == PARAMS[name]


@pytest.mark.parametrize("name", list(SIZES))
def test_model_builders_pin_the_published_config(name):
    pkg_name, layers, heads, kv, dim, hidden, max_seq_len, scale, tied = SIZES[name]
    pkg = PACKAGES[pkg_name]
    assert name in pkg.__all__ and f"lora_{name}" in pkg.__all__
    with torch.device("meta"):
        model = getattr(pkg, name)()
        lora = getattr(pkg, f"lora_{name}")(["q_proj", "v_proj"])
    attn = model.layers[0].attn
    assert (len(model.layers), attn.num_heads, attn.num_kv_heads, attn.embed_dim) == (
        layers, heads, kv, dim)
    assert model.layers[0].mlp.w1.weight.shape == (hidden, dim)
    assert model.tok_embeddings.weight.shape == (128_256, dim)
    assert model.max_seq_len == max_seq_len
    rope = attn.pos_embeddings
    assert rope.base == 500_000
    assert (None if rope.scaling is None else rope.scaling.scale_factor) == scale
    # One RoPE cache for the whole model, not one per layer.
    assert all(layer.attn.pos_embeddings is rope for layer in model.layers)
    assert isinstance(model.output, TiedLinear) == tied
    assert ("output.weight" in model.state_dict()) == (not tied)
    # The LoRA builder: the same base model plus adapters on q and v only.
    assert set(model.state_dict()) == {
        k for k in lora.state_dict() if ".lora_" not in k}
    assert count(lora) - count(model) == layers * 8 * (dim + heads * dim // heads) + layers * 8 * (
        dim + kv * dim // heads)


def test_llama3_2_state_dict_has_one_embedding_and_untied_option():
    kwargs = dict(vocab_size=32, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16,
                  max_seq_len=8, intermediate_dim=24)
    tied = llama3_2(**kwargs)
    assert tied.output.weight is tied.tok_embeddings.weight
    assert "output.weight" not in tied.state_dict()
    assert [n for n, _ in tied.named_parameters()].count("tok_embeddings.weight") == 1
    untied = llama3_2(**kwargs, tie_word_embeddings=False)
    assert isinstance(untied.output, torch.nn.Linear)
    assert untied.output.weight is not untied.tok_embeddings.weight


def test_default_intermediate_dim_follows_torchtune_0_6_1():
    from torchtune.models.llama3 import llama3
    from torchtune.models.llama3._model_utils import scale_hidden_dim_for_mlp

    # 4 * int(2 * d / 3) rounded up to 256: differs from Llama 2's int(8 * d / 3) at d=97.
    assert scale_hidden_dim_for_mlp(4096) == 11008 and scale_hidden_dim_for_mlp(97) == 256
    model = llama3(vocab_size=32, num_layers=1, num_heads=1, num_kv_heads=1, embed_dim=96,
                   max_seq_len=8)
    assert model.layers[0].mlp.w1.weight.shape == (256, 96)


TINY = dict(vocab_size=48, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
            max_seq_len=16, intermediate_dim=40)


@pytest.mark.parametrize("builder", [lora_llama3_1, lora_llama3_2])
def test_lora_builders_freeze_and_load_a_base_checkpoint(builder):
    model = builder(["q_proj", "k_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True,
                    lora_rank=4, lora_alpha=8.0, **TINY)
    adapters = get_adapter_params(model)
    assert len(adapters) == 2 * 2 * 7  # layers x (a, b) x (q, k, v, o, w1, w2, w3)
    set_trainable_params(model, adapters)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapters)
    assert not model.tok_embeddings.weight.requires_grad
    assert isinstance(model.layers[1].mlp.w2, LoRALinear)
    # A base checkpoint (no adapters) loads with only adapter keys missing.
    base_sd = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    missing, unexpected = model.load_state_dict(base_sd, strict=False)
    assert set(missing) == set(adapters)
    validate_missing_and_unexpected_for_lora(model, base_missing=missing,
                                             base_unexpected=unexpected)


def test_lora_on_a_tied_output_is_refused_and_untied_output_takes_it():
    with pytest.raises(ValueError, match="tied"):
        lora_llama3_2(["q_proj"], apply_lora_to_output=True, lora_rank=4, lora_alpha=8.0, **TINY)
    model = lora_llama3_2(["q_proj"], apply_lora_to_output=True, tie_word_embeddings=False,
                          lora_rank=4, lora_alpha=8.0, **TINY)
    assert isinstance(model.output, LoRALinear)
    with pytest.raises(ValueError, match="Unknown lora_attn_modules"):
        lora_llama3_1(["w1"], lora_rank=4, lora_alpha=8.0, **TINY)
