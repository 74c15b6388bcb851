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


# --- Llama 3.1 frequency scaling ------------------------------------------------------------


def meta_apply_scaling(freqs, scale_factor, low_freq_factor, high_freq_factor, old_context_len):
    """meta-llama/llama-models ``apply_scaling``, transcribed loop and all."""
    import math

    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    new_freqs = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            new_freqs.append(freq)
        elif wavelen > low_freq_wavelen:
            new_freqs.append(freq / scale_factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor
            )
            new_freqs.append((1 - smooth) * freq / scale_factor + smooth * freq)
    return torch.tensor(new_freqs, dtype=freqs.dtype)


def branch_of(freqs, low_freq_factor, high_freq_factor, old_context_len):
    """'keep' / 'smooth' / 'scale' for each frequency, as Meta's if/elif/else picks it."""
    wavelen = 2 * torch.pi / freqs
    return [
        "keep" if w < old_context_len / high_freq_factor
        else "scale" if w > old_context_len / low_freq_factor
        else "smooth"
        for w in wavelen.tolist()
    ]


def unscaled_theta(dim, base):
    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))


@pytest.mark.parametrize(
    "dim,scale_factor,old_context_len",
    [(16, 8, 8192), (128, 8, 8192), (64, 32, 8192), (16, 32, 64)],
)
def test_llama3_scaling_matches_meta_and_transformers(dim, scale_factor, old_context_len):
    from torchtune.modules import Llama3RopeScaling

    base = 500_000
    scaling = Llama3RopeScaling(scale_factor=scale_factor, old_context_len=old_context_len)
    theta = unscaled_theta(dim, base)
    ours = scaling(theta)
    torch.testing.assert_close(
        ours, meta_apply_scaling(theta, scale_factor, 1, 4, old_context_len), atol=0, rtol=1e-6
    )
    branches = branch_of(theta, 1, 4, old_context_len)
    assert {"keep", "smooth", "scale"} <= set(branches), branches  # every branch is exercised
    for b, t, o in zip(branches, theta.tolist(), ours.tolist()):
        if b == "keep":
            assert o == t
        elif b == "scale":
            assert o == pytest.approx(t / scale_factor, rel=1e-6)
        else:
            assert t / scale_factor < o < t

    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(
        hidden_size=dim * 2, num_attention_heads=2, max_position_embeddings=4 * old_context_len,
        rope_parameters={"rope_type": "llama3", "rope_theta": base, "factor": scale_factor,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": old_context_len},
    )
    hf_inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    assert attention_factor == 1.0  # HF scales nothing else for this rope type
    torch.testing.assert_close(ours, hf_inv_freq.float(), atol=0, rtol=1e-6)


def test_scaled_rope_rotates_interleaved_pairs_by_the_scaled_frequencies():
    from torchtune.modules import Llama3RopeScaling

    scaling = Llama3RopeScaling(scale_factor=32, old_context_len=64)
    rope = RotaryPositionalEmbeddings(dim=16, max_seq_len=1024, base=500_000, scaling=scaling)
    plain = RotaryPositionalEmbeddings(dim=16, max_seq_len=1024, base=500_000)
    theta = scaling(unscaled_theta(16, 500_000))
    x = torch.linspace(-2, 2, 1 * 6 * 2 * 16).view(1, 6, 2, 16)
    pos = torch.tensor([[0, 1, 100, 400, 800, 1023]])
    angles = pos[..., None].float() * theta  # [1, s, h_d/2]
    xc = torch.view_as_complex(x.reshape(1, 6, 2, 8, 2))
    expected = torch.view_as_real(xc * torch.polar(torch.ones_like(angles), angles)[:, :, None])
    torch.testing.assert_close(rope(x, pos), expected.flatten(3), atol=1e-5, rtol=0)
    assert (rope(x, pos) - plain(x, pos)).abs().max() > 1e-2  # the scaling changes the output
    # The scaled cache is rebuilt the same way after meta-device init.
    with torch.device("meta"):
        meta = RotaryPositionalEmbeddings(dim=16, max_seq_len=1024, base=500_000, scaling=scaling)
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    torch.testing.assert_close(meta.cache, rope.cache, atol=0, rtol=0)


def test_llama3_scaling_rejects_equal_factors():
    from torchtune.modules import Llama3RopeScaling

    with pytest.raises(ValueError, match="high_freq_factor"):
        Llama3RopeScaling(scale_factor=8, low_freq_factor=4, high_freq_factor=4)
