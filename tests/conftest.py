"""Shared test set-up: keep runs reproducible and off the network."""

import os
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"

# Dataset loading in tests is local; never wait on the Hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def assets() -> Path:
    """Folder of the small fixtures described in tests/assets/README.md."""
    return ASSETS


def _decode_in_steps(model, tokens, prefill: int, dtype):
    """The logits of ``tokens`` decoded with KV caches: a prefill of ``prefill`` tokens, then
    one token at a time."""
    import torch

    b, s = tokens.shape
    model.setup_caches(batch_size=b, dtype=dtype)
    try:
        out = [model(tokens[:, :prefill], input_pos=torch.arange(prefill).expand(b, prefill))]
        out += [model(tokens[:, i : i + 1], input_pos=torch.full((b, 1), i)) for i in range(prefill, s)]
    finally:
        model.teardown_caches()
    return torch.cat(out, dim=1)


@pytest.fixture
def assert_decoding_equals_full_forward():
    """Check that KV-cache decoding computes the model's function: in float64 (a copy of the
    model) the two agree to float64 rounding, and in fp32 each is within fp32's own error
    of that exact result. An fp32-only tolerance would be what one CPU happened to give:
    the two paths sum in other orders (a [1, d] GEMM against a [s, d] one), and how far
    apart that puts them depends on the CPU's kernels."""
    import copy

    import torch

    def check(model, tokens, prefill: int) -> None:
        with torch.no_grad():
            exact = copy.deepcopy(model).double()
            full64, dec64 = exact(tokens), _decode_in_steps(exact, tokens, prefill, torch.float64)
            full32, dec32 = model(tokens), _decode_in_steps(model, tokens, prefill, torch.float32)
        scale = float(full64.abs().max())
        # float64's unit roundoff is 1.1e-16; 1e-10 of the scale leaves room for any depth here.
        torch.testing.assert_close(dec64, full64, atol=1e-10 * scale, rtol=0)
        # fp32's error of the full forward, measured against the exact result (at least one
        # ulp of the largest logit): the decoded logits must be within a few times of it.
        err = max(float((full32.double() - full64).abs().max()), 2.0**-24 * scale)
        assert float((dec32.double() - full64).abs().max()) <= 8 * err, (
            float((dec32.double() - full64).abs().max()), err)

    return check
