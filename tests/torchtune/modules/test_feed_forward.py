"""FeedForward (SwiGLU): the training path recomputes silu(gate) * up in backward and
gives autograd's exact gradients while keeping two [.., hidden] tensors fewer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchtune.modules import FeedForward
from torchtune.modules.peft import LoRALinear


def mlp(dim=32, hidden=96, dtype=torch.float32):
    torch.manual_seed(0)
    return FeedForward(
        w1=nn.Linear(dim, hidden, bias=False), w2=nn.Linear(hidden, dim, bias=False),
        w3=nn.Linear(dim, hidden, bias=False),
    ).to(dtype)


def plain_forward(ff: FeedForward, x: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(ff.w1(x)) * ff.w3(x), ff.w2.weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frozen_down", [False, True])
def test_gradients_equal_autograd_bit_for_bit(dtype, frozen_down):
    ff, ref = mlp(dtype=dtype), mlp(dtype=dtype)
    ff.w2.weight.requires_grad_(not frozen_down)
    ref.w2.weight.requires_grad_(not frozen_down)
    x = torch.randn(2, 7, 32, dtype=dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(2, 7, 32, dtype=dtype)
    out = ff(xa)
    out.backward(grad)
    expected = plain_forward(ref, xb)
    expected.backward(grad)
    assert torch.equal(out, expected)
    assert torch.equal(xa.grad, xb.grad)
    for (name, p), q in zip(ff.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        assert p.grad is None or torch.equal(p.grad, q.grad), name


def _hidden_sized_saved(fn) -> int:
    storages = set()

    def pack(t):
        if t.shape == (50, 96):  # [tokens, hidden] activations
            storages.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return len(storages)


def test_training_keeps_two_hidden_tensors_fewer():
    ff = mlp()
    x = torch.randn(50, 32, requires_grad=True)
    assert _hidden_sized_saved(lambda: plain_forward(ff, x)) == 4  # gate, silu, up, product
    assert _hidden_sized_saved(lambda: ff(x)) == 2  # gate and up


def test_lora_down_projection_runs_as_a_module():
    ff = mlp()
    ff.w2 = LoRALinear(96, 32, rank=4, alpha=8.0)
    x = torch.randn(3, 32, requires_grad=True)
    out = ff(x)
    torch.testing.assert_close(out, ff.w2(F.silu(ff.w1(x)) * ff.w3(x)), atol=0, rtol=0)
    out.sum().backward()
    assert ff.w2.lora_b.weight.grad is not None
