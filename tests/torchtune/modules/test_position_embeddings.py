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


# --- Linear and YaRN scaling, partial rotary, against transformers ------------------------------

from torchtune._errors import UserValueError  # noqa: E402
from torchtune.modules.position_embeddings import (  # noqa: E402
    LinearRopeScaling,
    Llama3RopeScaling,
    YarnRopeScaling,
    rope_frequencies,
)

FP32_EPS = torch.finfo(torch.float32).eps

# (id, our scaling, transformers' rope_parameters for it, base, head_dim, partial factor)
HF_CASES = [
    ("default", None, {"rope_type": "default"}, 10_000.0, 64, 1.0),
    ("default-partial", None, {"rope_type": "default"}, 10_000.0, 64, 0.5),
    ("linear", LinearRopeScaling(4.0), {"rope_type": "linear", "factor": 4.0}, 10_000.0, 64, 1.0),
    ("linear-partial-0.4", LinearRopeScaling(2.0), {"rope_type": "linear", "factor": 2.0},
     10_000.0, 80, 0.4),
    ("llama3-partial", Llama3RopeScaling(32.0, old_context_len=512),
     {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 512}, 500_000.0, 128, 0.5),
    # Qwen 2.5's recommended long-context setting
    ("yarn-qwen2.5", YarnRopeScaling(4.0, 32768),
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
     1_000_000.0, 128, 1.0),
    # DeepSeek's mscale ratio, untruncated ramp, partial rotary
    ("yarn-mscale-untruncated-partial",
     YarnRopeScaling(40.0, 4096, mscale=1.0, mscale_all_dim=0.5, truncate=False),
     {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
      "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False}, 10_000.0, 128, 0.5),
    ("yarn-explicit-attention-factor",
     YarnRopeScaling(8.0, 2048, beta_fast=16.0, beta_slow=2.0, attention_factor=1.3),
     {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 2048,
      "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.3}, 10_000.0, 64, 1.0),
]


def hf_rope(rope_parameters, base, head_dim, partial):
    """transformers' inverse frequencies [r/2] and cos/sin multiplier for these settings."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.stablelm.modeling_stablelm import StableLmRotaryEmbedding

    config = transformers.LlamaConfig(
        hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
        max_position_embeddings=8192, partial_rotary_factor=partial,
        rope_parameters={**rope_parameters, "rope_theta": base},
    )
    rope_type = config.rope_parameters["rope_type"]
    # Llama's default ignores partial_rotary_factor; StableLM's reads it
    if rope_type == "default":
        return StableLmRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))


@pytest.mark.parametrize("case", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_frequencies_and_attention_factor_match_transformers(case):
    _, scaling, rope_parameters, base, head_dim, partial = case
    hf_inv_freq, hf_factor = hf_rope(rope_parameters, base, head_dim, partial)
    rotary_dim = int(head_dim * partial)
    ours = rope_frequencies(rotary_dim, base, scaling)
    assert ours.shape == hf_inv_freq.shape == (rotary_dim // 2,)
    # Both sides are fp32 computations of the same formula, each within a few ulp (<= 3 eps
    # relative: a pow, a division and, for YaRN, a two-term blend) of the exact value.
    torch.testing.assert_close(ours, hf_inv_freq.float(), atol=0, rtol=6 * FP32_EPS)
    expected_factor = 1.0 if scaling is None else scaling.attention_scaling
    assert expected_factor == pytest.approx(hf_factor, rel=1e-14)


def test_yarn_keeps_blends_and_interpolates():
    """The Qwen 2.5 case exercises all three regions of the ramp."""
    scaling = YarnRopeScaling(4.0, 32768)
    theta = rope_frequencies(128, 1e6)
    ratio = (scaling.scale(theta, 1e6, 128) / theta).tolist()
    assert ratio[0] == 1.0 and ratio[-1] == pytest.approx(0.25, rel=1e-6)
    assert any(0.25 * (1 + 1e-3) < r < 1 - 1e-3 for r in ratio)
    assert scaling.attention_scaling == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1)


def hf_to_interleaved(head_dim, rotary_dim):
    """Index into HF's per-head features giving ours: rotate-half pairs (j, j + r/2) become
    adjacent, features past rotary_dim stay in place."""
    half = rotary_dim // 2
    return [i for j in range(half) for i in (j, j + half)] + list(range(rotary_dim, head_dim))


@pytest.mark.parametrize("case", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_rotation_matches_transformers_apply_rotary_pos_emb(case):
    """Ours (interleaved) on permuted q equals transformers' rotate-half on q, permuted."""
    pytest.importorskip("transformers")
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb  # splits rot/pass

    _, scaling, rope_parameters, base, head_dim, partial = case
    rotary_dim = int(head_dim * partial)
    hf_inv_freq, hf_factor = hf_rope(rope_parameters, base, head_dim, partial)
    b, s, n_h, max_seq_len = 2, 7, 3, 5000
    pos = torch.tensor([[0, 1, 2, 100, 1000, 4000, 4999], [5, 9, 33, 250, 2047, 2048, 4321]])
    # transformers' LlamaRotaryEmbedding.forward: cos/sin of the duplicated angles, scaled
    hf_angles = pos[..., None].float() * hf_inv_freq.float()  # [b, s, r/2]
    emb = torch.cat([hf_angles, hf_angles], dim=-1)  # [b, s, r]
    cos, sin = emb.cos() * hf_factor, emb.sin() * hf_factor
    q_hf = torch.sin(torch.arange(b * s * n_h * head_dim) * 0.37).view(b, s, n_h, head_dim)
    expected, _ = apply_rotary_pos_emb(q_hf, q_hf, cos, sin, unsqueeze_dim=2)

    perm = hf_to_interleaved(head_dim, rotary_dim)
    rope = RotaryPositionalEmbeddings(head_dim, max_seq_len, base, scaling, rotary_dim=rotary_dim)
    ours = rope(q_hf[..., perm], pos)

    # Error bound: each output is x0 cos - x1 sin with |x0| + |x1| <= 2 max|x|, so it moves
    # by at most that times (the gap between the two sides' fp32 angles + a few eps for cos,
    # sin, the products, the sum and the attention factor), times the attention factor.
    our_angles = pos[..., None].float() * rope_frequencies(rotary_dim, base, scaling)
    angle_gap = (our_angles.double() - hf_angles.double()).abs().max().item()
    atol = hf_factor * 2 * q_hf.abs().max().item() * (angle_gap + 6 * FP32_EPS)
    torch.testing.assert_close(ours, expected[..., perm], atol=atol, rtol=0)
    if rotary_dim < head_dim:  # the rest passes through bit for bit, unscaled
        assert torch.equal(ours[..., rotary_dim:], q_hf[..., rotary_dim:])


def test_partial_rotary_with_yarn_backward_is_the_transposed_jacobian():
    """gradcheck in float64: the custom backward rotates by the opposite angle, which is the
    transpose only if the attention factor scales both directions alike."""
    rope = RotaryPositionalEmbeddings(8, 16, 10_000, YarnRopeScaling(8.0, 4), rotary_dim=4)
    assert rope.scaling.attention_scaling > 1.2
    x = torch.linspace(-1, 1, 2 * 5 * 2 * 8, dtype=torch.float64).view(2, 5, 2, 8)
    pos = torch.tensor([[0, 3, 15, 7, 1], [2, 2, 9, 11, 14]])
    assert torch.autograd.gradcheck(lambda t: rope(t, pos), (x.requires_grad_(),))


def test_yarn_cache_carries_the_attention_factor_and_rebuilds_after_meta_init():
    scaling = YarnRopeScaling(4.0, 64)
    with torch.device("meta"):
        rope = RotaryPositionalEmbeddings(16, 128, 10_000, scaling, rotary_dim=8)
    rope = rope.to_empty(device="cpu")
    rope.reset_parameters()
    assert rope.cache.shape == (128, 4, 2)
    norms = rope.cache.norm(dim=-1)  # |(cos, sin)| is the factor at every position and pair
    torch.testing.assert_close(
        norms, torch.full_like(norms, scaling.attention_scaling), atol=0, rtol=4 * FP32_EPS
    )


@pytest.mark.parametrize("rotary_dim", [0, 3, 18, -2])
def test_bad_rotary_dim_is_a_user_error(rotary_dim):
    with pytest.raises(UserValueError, match="rotary_dim"):
        RotaryPositionalEmbeddings(16, 8, rotary_dim=rotary_dim)


@pytest.mark.parametrize(
    "make", [lambda: LinearRopeScaling(0.0), lambda: YarnRopeScaling(-1.0, 4096),
             lambda: YarnRopeScaling(4.0, 0)],
)
def test_nonpositive_scaling_fields_are_user_errors(make):
    with pytest.raises(UserValueError, match="must be positive"):
        make()
