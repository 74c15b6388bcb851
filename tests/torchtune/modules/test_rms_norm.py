"""RMSNorm against the formula, and its fp32 computation for low-precision inputs."""

import torch

from torchtune.modules import RMSNorm


def test_matches_formula_and_keeps_dtype():
    norm = RMSNorm(4, eps=1e-6)
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    rms = (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(norm(x), x / rms * norm.scale, atol=1e-7, rtol=0)
    assert list(norm.state_dict()) == ["scale"]


def test_bf16_input_is_normalised_in_fp32():
    norm = RMSNorm(64).to(torch.bfloat16)
    x = (torch.arange(128, dtype=torch.float32).view(2, 64) / 7.0 + 100.0).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    x32 = x.float()
    expected = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def _saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd keeps for backward while ``fn`` runs."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_training_gradients_match_fp64_truth_as_closely_as_autograd():
    """The training path (backward from x and rstd only) is as accurate as autograd on
    the plain expression: both within 1e-6 of fp64, for the input and for the scale."""
    torch.manual_seed(0)
    x, scale, grad = torch.randn(300, 256) * 3, torch.randn(256), torch.randn(300, 256)

    x64, s64 = x.double().requires_grad_(), scale.double().requires_grad_()
    (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * s64).backward(grad.double())

    norm = RMSNorm(256, eps=1e-5)
    with torch.no_grad():
        norm.scale.copy_(scale)
    xa = x.clone().requires_grad_()
    out = norm(xa)
    out.backward(grad)
    with torch.no_grad():
        assert torch.equal(out, norm(x))  # the same forward as inference
    xb, sb = x.clone().requires_grad_(), scale.clone().requires_grad_()
    (xb * torch.rsqrt(xb.pow(2).mean(-1, keepdim=True) + 1e-5) * sb).backward(grad)
    for ours, plain, truth in [(xa.grad, xb.grad, x64.grad), (norm.scale.grad, sb.grad, s64.grad)]:
        ours_err = (ours.double() - truth).abs().max().item()
        plain_err = (plain.double() - truth).abs().max().item()
        assert ours_err < 1e-6 * truth.abs().max().item() * 10 and ours_err <= 2 * plain_err + 1e-7


def test_training_keeps_only_the_input_and_one_value_per_row():
    norm = RMSNorm(256)
    x = torch.randn(300, 256, requires_grad=True)
    kept = _saved_bytes(lambda: norm(x))
    assert kept == (300 * 256 + 300 + 256) * 4  # x, rstd, scale: not the normalised x


def test_frozen_scale_gets_no_gradient_and_input_still_does():
    norm = RMSNorm(8).requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    norm(x).sum().backward()
    assert norm.scale.grad is None and x.grad is not None and x.grad.abs().sum() > 0


def test_gemma_form_multiplies_by_one_plus_w_in_fp32_before_the_cast():
    """``offset=1.0`` is Gemma's norm as its reference writes it:
    ``(x.float() * rsqrt(...) * (1 + w.float())).type_as(x)``, bit for bit in bf16 (where
    ``1 + w`` rounded to bf16 would differ), and its backward matches fp64 autograd."""
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-6, offset=1.0)
    assert torch.equal(norm.scale, torch.zeros(64))  # the stored weight starts at zero
    w = torch.randn(64) * 1e-2
    x = torch.randn(5, 64) * 3
    with torch.no_grad():
        norm.scale.copy_(w)
    bf = RMSNorm(64, eps=1e-6, offset=1.0).to(torch.bfloat16)
    with torch.no_grad():
        bf.scale.copy_(w)
    xb = x.to(torch.bfloat16)
    x32, w32 = xb.float(), bf.scale.float()
    expected = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w32)).to(torch.bfloat16)
    torch.testing.assert_close(bf(xb), expected, atol=0, rtol=0)
    cast_first = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16) * (1 + bf.scale)
    assert not torch.equal(bf(xb), cast_first)  # the order is observable in bf16

    grad = torch.randn(5, 64)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + w64)).backward(grad.double())
    xa = x.clone().requires_grad_()
    norm(xa).backward(grad)
    # fp32 rounding of ~64-term sums of O(10) values: 1e-5 relative is a wide margin.
    torch.testing.assert_close(xa.grad.double(), x64.grad, atol=1e-5 * x64.grad.abs().max().item(), rtol=0)
    torch.testing.assert_close(norm.scale.grad.double(), w64.grad, atol=1e-5 * w64.grad.abs().max().item(), rtol=0)
