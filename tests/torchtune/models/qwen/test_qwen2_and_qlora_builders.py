"""Qwen 2 sized builders (exact parameter counts on the meta device) and the qlora_*
builders of every family (NF4 bases, built on meta so no weight is allocated)."""

import importlib

import pytest
import torch

import torchtune.models.qwen2 as qwen2_pkg
from torchtune.models.llama3_2 import qlora_llama3_2_1b
from torchtune.modules import TiedLinear
from torchtune.modules.low_precision import FrozenNF4Linear, is_nf4
from torchtune.modules.peft import LoRALinear, get_adapter_params

# name -> (parameters, tied): Qwen/Qwen2-{0.5B,1.5B,7B}-Instruct as published.
COUNTS = {
    "qwen2_0_5b": (494_032_768, True),
    "qwen2_1_5b": (1_543_714_304, True),
    "qwen2_7b": (7_615_616_512, False),
}


@pytest.mark.parametrize("name", list(COUNTS))
def test_qwen2_parameter_counts(name):
    count, tied = COUNTS[name]
    with torch.device("meta"):
        model = getattr(qwen2_pkg, name)()
        lora = getattr(qwen2_pkg, "lora_" + name)(["q_proj", "v_proj"])
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n:,} parameters")
    assert n == count and isinstance(model.output, TiedLinear) == tied
    adapters = get_adapter_params(lora)
    assert sum(p.numel() for k, p in lora.named_parameters() if k not in adapters) == count


def test_qlora_builders_are_the_lora_builders_with_quantize_base():
    families = ["llama2", "llama3", "llama3_1", "llama3_2", "llama3_3", "qwen2", "qwen2_5",
                "qwen3"]
    for family in families:
        pkg = vars(importlib.import_module(f"torchtune.models.{family}"))
        qloras = [n for n in pkg["__all__"] if n.startswith("qlora_")]
        loras = [n for n in pkg["__all__"] if n.startswith("lora_") and n != f"lora_{family}"]
        assert sorted(qloras) == sorted("q" + n for n in loras), family
        for name in qloras:
            assert pkg[name].keywords == {"quantize_base": True}, name


@pytest.mark.parametrize("builder", [qlora_llama3_2_1b, qwen2_pkg.qlora_qwen2_0_5b])
def test_qlora_builders_quantize_every_frozen_decoder_linear(builder):
    with torch.device("meta"):
        model = builder(["q_proj", "v_proj"], use_dora=True)
    attn = model.layers[0].attn
    assert isinstance(attn.q_proj, LoRALinear) and attn.q_proj.quantize_base
    assert isinstance(attn.k_proj, FrozenNF4Linear)
    for layer in model.layers:
        for name, p in layer.named_parameters():
            if name.endswith(("proj.weight", "w1.weight", "w2.weight", "w3.weight")):
                assert is_nf4(p), name
    assert not is_nf4(model.tok_embeddings.weight)
    assert any(k.endswith("q_proj.magnitude") for k in get_adapter_params(model))
