"""LoRALinear: forward formula, initialisation, adapter listing."""

import math

import pytest
import torch
from torch import nn

from torchtune.modules.peft import AdapterModule, LoRALinear


def test_forward_is_base_plus_scaled_low_rank_update():
    lora = LoRALinear(6, 5, rank=2, alpha=3.0, use_bias=True)
    with torch.no_grad():
        for i, p in enumerate(lora.parameters()):
            p.copy_(torch.cos(torch.arange(p.numel()).view(p.shape) * (1.3 + i)))
    x = torch.sin(torch.arange(4 * 6).view(4, 6) * 0.7)
    w, b = lora.weight, lora.bias
    a, bb = lora.lora_a.weight, lora.lora_b.weight
    expected = x @ w.T + b + 1.5 * (x @ a.T @ bb.T)  # alpha / rank = 1.5
    torch.testing.assert_close(lora(x), expected, atol=1e-6, rtol=0)
    assert lora(x).shape == (4, 5)


def test_initialisation_and_state_dict_names():
    torch.manual_seed(0)
    lora = LoRALinear(64, 32, rank=4, alpha=8)
    assert set(lora.state_dict()) == {"weight", "lora_a.weight", "lora_b.weight"}
    assert lora.weight.shape == (32, 64) and lora.lora_a.weight.shape == (4, 64)
    assert lora.lora_b.weight.shape == (32, 4)
    assert torch.count_nonzero(lora.lora_b.weight) == 0  # fresh adapter is a no-op
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) on fan_in 64
    assert lora.lora_a.weight.abs().max() <= bound and lora.lora_a.weight.std() > bound / 3
    x = torch.randn(3, 64)
    torch.testing.assert_close(lora(x), x @ lora.weight.T, atol=0, rtol=0)


def test_adapter_protocol_and_dropout_only_on_adapter_path():
    lora = LoRALinear(4, 4, rank=2, alpha=2, dropout=1.0)  # drops the whole adapter input
    assert isinstance(lora, AdapterModule) and not isinstance(nn.Linear(2, 2), AdapterModule)
    assert lora.adapter_params() == ["lora_a.weight", "lora_b.weight"]
    nn.init.ones_(lora.lora_b.weight)
    x = torch.ones(2, 4)
    lora.train()
    torch.testing.assert_close(lora(x), x @ lora.weight.T, atol=0, rtol=0)
    lora.eval()
    assert not torch.allclose(lora(x), x @ lora.weight.T)


def test_rank_must_be_positive():
    with pytest.raises(ValueError, match="rank must be positive, got 0"):
        LoRALinear(4, 4, rank=0, alpha=1)
