"""The mixture-of-experts block against a float64 reference written out token by token,
and its two kernels against each other, outputs and gradients; its stacked expert adapters
and NF4 experts (QLoRA) against the merged or dequantized weights they stand for."""

import pytest
import torch

from torchtune._errors import UserValueError
from torchtune.modules.low_precision import is_nf4
from torchtune.modules.moe import (
    GroupedExperts,
    load_balancing_loss,
    MoE,
    moe_router_stats,
    router_z_loss,
    training_aux_loss,
    unflatten_nf4_experts,
)
from torchtune.modules.peft import get_merged_lora_ckpt
from torchtune.rlhf._adapters import disable_adapters


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


def _adapted(kernel="auto", rank=3, quantize_base=False, dim=12, hidden=20, num_experts=16):
    """A MoE whose experts carry random stacked adapters (b nonzero, as after training)."""
    torch.manual_seed(0)
    experts = GroupedExperts(dim, hidden, num_experts, lora_rank=rank, lora_alpha=2.0 * rank,
                             quantize_base=quantize_base)
    with torch.no_grad():
        for name in experts.adapter_params():
            getattr(experts, name).normal_(0, 0.2)
    return MoE(dim=dim, hidden_dim=hidden, num_experts=num_experts, experts_per_token=2, norm_topk_prob=True,
               experts=experts, kernel=kernel)


def test_expert_adapters_are_w_plus_scaled_ba_per_expert_on_both_kernels():
    """Each expert's projection is W + (alpha / r) B_e A_e: the adapted MoE equals a plain
    MoE holding the merged stacks (get_merged_lora_ckpt's fold), and the grouped and loop
    kernels agree on outputs and on every adapter's gradient."""
    x = torch.randn(2, 40, 12, generator=torch.Generator().manual_seed(1))
    results = {}
    for kernel in ("grouped", "loop"):
        moe = _adapted(kernel)
        out = moe(x)
        out.square().sum().backward()
        results[kernel] = out.detach(), {n: moe.experts.get_parameter(n).grad for n in moe.experts.adapter_params()}
    merged = get_merged_lora_ckpt({f"mlp.{k}": v for k, v in moe.state_dict().items()}, rank=3, alpha=6.0)
    assert sorted(merged) == ["mlp.experts.down_proj", "mlp.experts.gate_proj", "mlp.experts.up_proj", "mlp.router.weight"]
    plain = MoE(dim=12, hidden_dim=20, num_experts=16, experts_per_token=2, norm_topk_prob=True)
    plain.load_state_dict({k[len("mlp."):]: v for k, v in merged.items()})
    torch.testing.assert_close(results["loop"][0], plain(x).detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(results["grouped"][0], results["loop"][0], atol=1e-5, rtol=0)
    for name, grad in results["grouped"][1].items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, results["loop"][1][name], atol=1e-5, rtol=0, msg=name)


def test_disable_adapters_turns_expert_adapters_off():
    moe = _adapted()
    x = torch.randn(1, 30, 12)
    plain = MoE(dim=12, hidden_dim=20, num_experts=16, experts_per_token=2, norm_topk_prob=True)
    plain.load_state_dict({k: v for k, v in moe.state_dict().items() if "lora" not in k})
    with disable_adapters(moe):
        torch.testing.assert_close(moe(x), plain(x), atol=0, rtol=0)
    assert not torch.allclose(moe(x), plain(x))


def test_nf4_experts_compute_with_their_dequantized_stacks_and_save_none():
    """QLoRA's experts: a checkpoint's [E, out, in] stacks quantize as they load (stored
    [E * out, in], NF4 has two dimensions at most), the forward and the adapters' gradients
    are those of the dequantized stacks, backward keeps no full-precision stack, and the
    merge gives the stacks back [E, out, in]."""
    pytest.importorskip("torchao")
    dim, hidden, num_experts = 64, 32, 16  # each stack 32768 values: NF4 blocks of 16384
    source = _adapted(quantize_base=False, dim=dim, hidden=hidden, num_experts=num_experts)
    nf4 = _adapted(quantize_base=True, dim=dim, hidden=hidden, num_experts=num_experts)
    nf4.load_state_dict(source.state_dict())
    assert is_nf4(nf4.experts.gate_proj) and tuple(nf4.experts.gate_proj.shape) == (num_experts * hidden, dim)
    stacks = {f"mlp.experts.{n}": getattr(nf4.experts, n) for n in ("gate_proj", "up_proj", "down_proj")}
    dequantized = {k[len("mlp."):]: v for k, v in unflatten_nf4_experts(stacks).items()}
    reference = _adapted(quantize_base=False, dim=dim, hidden=hidden, num_experts=num_experts)
    reference.load_state_dict({**source.state_dict(), **dequantized})
    x = torch.randn(2, 40, dim, generator=torch.Generator().manual_seed(1))
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(t.numel()) or t, lambda t: t):
        out = nf4(x)
    assert num_experts * hidden * dim not in shapes  # no dequantized stack kept for backward
    out.square().sum().backward()
    expected = reference(x)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    for name in nf4.experts.adapter_params():
        torch.testing.assert_close(nf4.experts.get_parameter(name).grad, reference.experts.get_parameter(name).grad,
                                   atol=1e-4, rtol=1e-5, msg=name)
    merged = get_merged_lora_ckpt({f"mlp.{k}": v for k, v in nf4.state_dict().items()}, rank=3, alpha=6.0)
    assert tuple(merged["mlp.experts.gate_proj"].shape) == (num_experts, hidden, dim)
    expected = get_merged_lora_ckpt({f"mlp.{k}": v for k, v in reference.state_dict().items()}, rank=3, alpha=6.0)
    torch.testing.assert_close(merged["mlp.experts.down_proj"], expected["mlp.experts.down_proj"])


def test_training_aux_loss_adds_the_z_loss_on_request():
    """The recipes' term: coef * load balancing (+ z_coef * z-loss); none in eval mode."""
    from types import SimpleNamespace

    moe = _moe()
    model = torch.nn.Sequential(moe)
    model.description = SimpleNamespace(router_aux_loss_coef=0.01)
    model(torch.randn(1, 9, 12))
    stats = moe_router_stats(model)
    torch.testing.assert_close(training_aux_loss(model), 0.01 * load_balancing_loss(stats))
    torch.testing.assert_close(training_aux_loss(model, 1e-3),
                               0.01 * load_balancing_loss(stats) + 1e-3 * router_z_loss(stats))
    assert training_aux_loss(model.eval(), 1e-3) is None


def test_shared_expert_block_is_transformers_qwen2_moe_block():
    """With a gated shared expert the block is transformers' Qwen2MoeSparseMoeBlock (no
    top-k renormalisation, sigmoid-gated dense expert added): outputs and every gradient
    within 1e-5 (fp32), the weights copied across."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

    from torchtune.modules import FeedForward

    config = transformers.Qwen2MoeConfig(hidden_size=12, moe_intermediate_size=20, shared_expert_intermediate_size=24,
                                         num_experts=8, num_experts_per_tok=2, norm_topk_prob=False)
    torch.manual_seed(0)
    theirs = Qwen2MoeSparseMoeBlock(config)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
    lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
    ours = MoE(dim=12, hidden_dim=20, num_experts=8, experts_per_token=2, norm_topk_prob=False,
               shared_expert=FeedForward(w1=lin(12, 24), w2=lin(24, 12), w3=lin(12, 24)), shared_expert_gate=lin(12, 1))
    gate, up = theirs.experts.gate_up_proj.detach().chunk(2, dim=1)
    ours.load_state_dict({
        "router.weight": theirs.gate.weight, "experts.gate_proj": gate, "experts.up_proj": up,
        "experts.down_proj": theirs.experts.down_proj, "shared_expert.w1.weight": theirs.shared_expert.gate_proj.weight,
        "shared_expert.w2.weight": theirs.shared_expert.down_proj.weight,
        "shared_expert.w3.weight": theirs.shared_expert.up_proj.weight,
        "shared_expert_gate.weight": theirs.shared_expert_gate.weight,
    })
    x = torch.randn(2, 30, 12, generator=torch.Generator().manual_seed(1))
    out, expected = ours(x), theirs(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    out.square().sum().backward()
    expected.square().sum().backward()
    gate_grad, up_grad = theirs.experts.gate_up_proj.grad.chunk(2, dim=1)
    for mine, ref in ((ours.experts.gate_proj, gate_grad), (ours.experts.up_proj, up_grad),
                      (ours.experts.down_proj, theirs.experts.down_proj.grad), (ours.router.weight, theirs.gate.weight.grad),
                      (ours.shared_expert.w2.weight, theirs.shared_expert.down_proj.weight.grad),
                      (ours.shared_expert_gate.weight, theirs.shared_expert_gate.weight.grad)):
        torch.testing.assert_close(mine.grad, ref, atol=1e-5 * max(1.0, float(ref.abs().max())), rtol=0)
