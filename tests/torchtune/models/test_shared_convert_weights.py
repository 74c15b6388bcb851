"""The shared key-map machinery (``torchtune.models._convert_weights``): the q/k row
permutation, whole-head and partial-rotary, checked against transformers' own numbers."""

import pytest
import torch

from torchtune._errors import UserValueError
from torchtune.models._convert_weights import (
    hf_to_tune_keys,
    LLAMA_FROM_HF,
    permute_qk_rows,
    tune_to_hf_keys,
)

N_H, H_D, COLS = 3, 8, 5


def _rows(n_heads=N_H, head_dim=H_D, cols=COLS):
    # arange values: every row is distinct, so a wrong order cannot pass by accident
    return torch.arange(n_heads * head_dim * cols, dtype=torch.float32).view(-1, cols)


def _rotate_half_order(head_dim):
    """The row order transformers' ``convert_llama_weights_to_hf.py`` writes for one head:
    HF row (p, j) is Meta row (j, p), i.e. ``[0, 2, 4, ..., 1, 3, 5, ...]``."""
    return list(range(0, head_dim, 2)) + list(range(1, head_dim, 2))


@pytest.mark.parametrize("rotary_dim", [2, 4, 6, 8, None])
def test_permute_then_unpermute_is_the_identity(rotary_dim):
    t = _rows()
    hf = permute_qk_rows(t, N_H, H_D, to_hf=True, name="q", rotary_dim=rotary_dim)
    assert not torch.equal(hf, t) or rotary_dim == 2  # rot 2: (0, 1) is its own reorder
    assert torch.equal(permute_qk_rows(hf, N_H, H_D, to_hf=False, name="q", rotary_dim=rotary_dim), t)
    tune = permute_qk_rows(t, N_H, H_D, to_hf=False, name="q", rotary_dim=rotary_dim)
    assert torch.equal(permute_qk_rows(tune, N_H, H_D, to_hf=True, name="q", rotary_dim=rotary_dim), t)


def test_full_rotary_dim_equals_the_whole_head_permutation():
    t = _rows()
    for to_hf in (True, False):
        whole = permute_qk_rows(t, N_H, H_D, to_hf=to_hf, name="k")
        assert torch.equal(permute_qk_rows(t, N_H, H_D, to_hf=to_hf, name="k", rotary_dim=H_D), whole)
    # and the whole-head order is convert_llama_weights_to_hf's
    order = [h * H_D + r for h in range(N_H) for r in _rotate_half_order(H_D)]
    assert torch.equal(permute_qk_rows(t, N_H, H_D, to_hf=True, name="k"), t[order])


def test_partial_rotary_permutes_only_the_rotated_rows():
    t = _rows()
    rot = 4
    hf = permute_qk_rows(t, N_H, H_D, to_hf=True, name="q", rotary_dim=rot)
    order = [h * H_D + r for h in range(N_H) for r in _rotate_half_order(rot) + list(range(rot, H_D))]
    assert torch.equal(hf, t[order])


def test_permutation_error_is_one_line():
    with pytest.raises(UserValueError, match="Cannot permute 'q'.*rotary_dim 3"):
        permute_qk_rows(_rows(), N_H, H_D, to_hf=True, name="q", rotary_dim=3)
    with pytest.raises(UserValueError, match="Cannot permute 'q'.*rotary_dim 10"):
        permute_qk_rows(_rows(), N_H, H_D, to_hf=True, name="q", rotary_dim=10)
    with pytest.raises(UserValueError, match="3 heads x head_dim 8 = 24 rows"):
        permute_qk_rows(_rows()[:-1], N_H, H_D, to_hf=True, name="q")


def test_partial_rotary_state_dict_round_trip():
    sd = {
        "layers.0.attn.q_proj.weight": _rows(4, H_D, COLS),
        "layers.0.attn.k_proj.weight": _rows(2, H_D, COLS) + 1000,
        "layers.0.attn.v_proj.weight": _rows(2, H_D, COLS) + 2000,
    }
    hf = tune_to_hf_keys(sd, 4, 2, 4 * H_D, H_D, LLAMA_FROM_HF, "test", rotary_dim=4)
    assert torch.equal(hf["model.layers.0.self_attn.v_proj.weight"], sd["layers.0.attn.v_proj.weight"])
    back = hf_to_tune_keys(hf, 4, 2, 4 * H_D, H_D, LLAMA_FROM_HF, "test", rotary_dim=4)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_partial_rotary_matches_transformers_rotate_half():
    """Rotating the HF-ordered rows the way transformers does (``rotate_half`` on the first
    ``rotary_dim`` features, the rest passed through) equals rotating our rows interleaved,
    after the permutation."""
    rot, n, seq = 4, 2, 3
    x_tune = torch.randn(seq, n * H_D, generator=torch.Generator().manual_seed(0))
    theta = torch.rand(seq, rot // 2, generator=torch.Generator().manual_seed(1)) * 3

    def interleaved(x):  # meta-llama/llama: pairs (2j, 2j+1) of the first rot features
        x = x.view(seq, n, H_D)
        r = x[..., :rot].reshape(seq, n, rot // 2, 2)
        c, s = theta.cos()[:, None], theta.sin()[:, None]
        out = torch.stack([r[..., 0] * c - r[..., 1] * s, r[..., 0] * s + r[..., 1] * c], -1)
        return torch.cat([out.reshape(seq, n, rot), x[..., rot:]], -1).reshape(seq, n * H_D)

    def rotate_half(x):  # transformers: pairs (j, j + rot/2) of the first rot features
        x = x.view(seq, n, H_D)
        r = x[..., :rot]
        c = torch.cat([theta.cos()] * 2, -1)[:, None]
        s = torch.cat([theta.sin()] * 2, -1)[:, None]
        half = torch.cat([-r[..., rot // 2 :], r[..., : rot // 2]], -1)
        return torch.cat([r * c + half * s, x[..., rot:]], -1).reshape(seq, n * H_D)

    # x's features are the output rows of q_proj: permute them as the weight's rows
    x_hf = permute_qk_rows(x_tune.T, n, H_D, to_hf=True, name="q", rotary_dim=rot).T
    want = permute_qk_rows(interleaved(x_tune).T, n, H_D, to_hf=True, name="q", rotary_dim=rot).T
    torch.testing.assert_close(rotate_half(x_hf), want, rtol=0, atol=1e-6)
