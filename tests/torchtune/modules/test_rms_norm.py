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
