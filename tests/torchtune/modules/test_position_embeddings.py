"""Interleaved RoPE against Meta's complex-number formulation."""

import pytest
import torch

from torchtune.modules import RotaryPositionalEmbeddings


def complex_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0):
    """meta-llama/llama apply_rotary_emb; x [b, s, n, h_d], positions [b, s]."""
    h_d = x.shape[-1]
    freqs = 1.0 / (base ** (torch.arange(0, h_d, 2)[: h_d // 2].float() / h_d))
    angles = positions[..., None].float() * freqs  # [b, s, h_d/2]
    rot = torch.polar(torch.ones_like(angles), angles)[:, :, None, :]
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(3).type_as(x)


def test_matches_complex_formulation():
    rope = RotaryPositionalEmbeddings(dim=16, max_seq_len=64)
    x = torch.linspace(-2, 2, 2 * 10 * 3 * 16).view(2, 10, 3, 16)
    default_pos = torch.arange(10).expand(2, 10)
    torch.testing.assert_close(rope(x), complex_rope(x, default_pos), atol=1e-6, rtol=0)
    pos = torch.tensor([[5, 6, 7, 0, 1, 2, 3, 40, 41, 63]] * 2)
    torch.testing.assert_close(rope(x, pos), complex_rope(x, pos), atol=1e-6, rtol=0)
    assert not torch.allclose(rope(x, pos), rope(x))  # positions really matter


def test_cache_is_not_in_state_dict_and_rebuilds_after_meta_init():
    with torch.device("meta"):
        rope = RotaryPositionalEmbeddings(dim=8, max_seq_len=16)
    assert rope.state_dict() == {}
    rope = rope.to_empty(device="cpu")
    rope.reset_parameters()
    torch.testing.assert_close(rope.cache, RotaryPositionalEmbeddings(8, 16).cache, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_rotation_equals_the_stacked_formula_and_its_autograd_bit_for_bit(dtype):
    """Training writes the rotation into one tensor with its own backward; values and
    gradients must equal autograd on the plain complex-multiply formula exactly."""
    from torchtune.modules.position_embeddings import _RotateFn

    torch.manual_seed(0)
    x, grad = torch.randn(2, 9, 4, 16).to(dtype), torch.randn(2, 9, 4, 16).to(dtype)
    cos, sin = torch.randn(9, 1, 8), torch.randn(9, 1, 8)

    def stacked(t):
        pairs = t.float().reshape(*t.shape[:-1], -1, 2)
        t0, t1 = pairs[..., 0], pairs[..., 1]
        return torch.stack([t0 * cos - t1 * sin, t1 * cos + t0 * sin], -1).flatten(-2).type_as(t)

    ours, plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = _RotateFn.apply(ours, cos, sin)
    out.backward(grad)
    expected = stacked(plain)
    expected.backward(grad)
    assert torch.equal(out, expected) and torch.equal(ours.grad, plain.grad)
