"""The mixture-of-experts block against a float64 reference written out token by token,
and its two kernels against each other, outputs and gradients."""

import pytest
import torch

from torchtune._errors import UserValueError
from torchtune.modules.moe import load_balancing_loss, MoE, moe_router_stats, router_z_loss


def _moe(num_experts=16, k=2, norm=True, kernel="auto", seed=0):
    torch.manual_seed(seed)
    moe = MoE(dim=12, hidden_dim=20, num_experts=num_experts, experts_per_token=k, norm_topk_prob=norm, kernel=kernel)
    return moe


def _reference(moe, x):
    """Each token, each of its top-k experts, in float64: the definition."""
    x = x.double().reshape(-1, x.shape[-1])
    router = moe.router.weight.double()
    g, u, d = (p.double() for p in (moe.experts.gate_proj, moe.experts.up_proj, moe.experts.down_proj))
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        probs = torch.softmax(x[t] @ router.t(), dim=-1)
        w, idx = probs.topk(moe.experts_per_token)
        if moe.norm_topk_prob:
            w = w / w.sum()
        for weight, e in zip(w, idx.tolist()):
            out[t] += weight * (torch.nn.functional.silu(g[e] @ x[t]) * (u[e] @ x[t])) @ d[e].t()
    return out


@pytest.mark.parametrize("tokens", [5, 64], ids=["some-experts-idle", "every-expert-used"])
@pytest.mark.parametrize("norm", [True, False])
def test_moe_is_the_top_k_mixture(tokens, norm):
    moe = _moe(norm=norm)
    x = torch.randn(1, tokens, 12)
    out = moe(x)
    used = (moe.router_stats.tokens_per_expert > 0).sum().item()
    assert (used < 16) if tokens == 5 else (used == 16)
    # fp32 sums of ~20-term products of O(1) values: 1e-5 is ~100x their rounding.
    torch.testing.assert_close(out.double().reshape(-1, 12), _reference(moe, x), atol=1e-5, rtol=0)
    assert moe.router_stats.tokens_per_expert.sum() == tokens * 2


@pytest.mark.parametrize("tokens", [5, 64])
def test_grouped_and_loop_kernels_give_equal_outputs_and_gradients(tokens):
    results = []
    for kernel in ("grouped", "loop"):
        moe = _moe(kernel=kernel)
        x = torch.randn(2, tokens, 12, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = moe(x)
        (out.square().sum() + load_balancing_loss(moe_router_stats(moe))).backward()
        results.append((out.detach(), x.grad, {n: p.grad for n, p in moe.named_parameters()}))
    (o1, gx1, gp1), (o2, gx2, gp2) = results
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=0)
    for n in gp1:
        assert gp1[n] is not None, n
        torch.testing.assert_close(gp1[n], gp2[n], atol=1e-5, rtol=0, msg=n)


def test_load_balancing_and_z_loss_formulas():
    """Two layers' stats combine as transformers' load_balancing_loss_func combines the
    concatenated router logits; the z-loss is the mean squared logsumexp."""
    a, b = _moe(seed=0), _moe(seed=1)
    x = torch.randn(1, 9, 12)
    a(x), b(x)
    stats = moe_router_stats(torch.nn.ModuleList([a, b]))
    logits = torch.cat([a.router(x[0]), b.router(x[0])])  # [2 * 9, E]
    probs = logits.softmax(-1)
    chosen = probs.topk(2, dim=-1).indices
    f = torch.zeros(16).index_add_(0, chosen.reshape(-1), torch.ones(chosen.numel())) / logits.shape[0]
    expected = 16 * (f * probs.mean(0)).sum()
    torch.testing.assert_close(load_balancing_loss(stats), expected)
    torch.testing.assert_close(router_z_loss(stats), torch.logsumexp(logits, -1).pow(2).mean())
    assert load_balancing_loss([]) is None


def test_bad_settings_are_one_line():
    with pytest.raises(UserValueError, match=r"experts_per_token \(5\) must be in \[1, num_experts \(4\)\]"):
        MoE(dim=4, hidden_dim=4, num_experts=4, experts_per_token=5, norm_topk_prob=True)
    with pytest.raises(UserValueError, match="kernel 'fast'"):
        MoE(dim=4, hidden_dim=4, num_experts=4, experts_per_token=1, norm_topk_prob=True, kernel="fast")
