"""DoRA (LoRALinear(use_dora=True)) against HF peft's LoraConfig(use_dora=True): logits,
adapter gradients, magnitude initialisation and the merged weight, fp32 on CPU."""

import pytest
import torch
from torch import nn

from torchtune.modules.peft import LoRALinear, get_adapter_params, get_merged_lora_ckpt

peft = pytest.importorskip("peft")

RANK, ALPHA = 2, 3.0
# (name, in, out, bias): a bias checks that peft's base-result-minus-bias is matched.
LAYERS = (("q", 16, 12, True), ("w", 12, 8, False))


class Tiny(nn.Module):
    def __init__(self, make):
        super().__init__()
        for name, i, o, bias in LAYERS:
            setattr(self, name, make(i, o, bias))

    def forward(self, x):
        return self.w(torch.tanh(self.q(x)))


def _fill(t, k):
    with torch.no_grad():
        t.copy_(torch.cos(torch.arange(t.numel(), dtype=torch.float32).view(t.shape) * k) / 2)


def _pair(dropout=0.0):
    """peft's DoRA model and ours holding identical base, A, B and magnitude values."""
    ref = Tiny(lambda i, o, b: nn.Linear(i, o, bias=b))
    for k, p in enumerate(ref.parameters()):
        _fill(p, 0.7 + k)
    cfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["q", "w"],
                          use_dora=True, lora_dropout=dropout)
    ref = peft.get_peft_model(ref, cfg).base_model.model
    ours = Tiny(lambda i, o, b: LoRALinear(i, o, RANK, ALPHA, dropout=dropout, use_bias=b,
                                           use_dora=True))
    for k, (name, *_ ) in enumerate(LAYERS):
        r, m = getattr(ref, name), getattr(ours, name)
        _fill(r.lora_A["default"].weight, 1.3 + k)
        _fill(r.lora_B["default"].weight, 2.1 + k)  # nonzero B: a trained adapter
        mag = r.lora_magnitude_vector["default"].weight
        with torch.no_grad():
            mag.mul_(torch.linspace(0.8, 1.2, mag.numel()))  # away from ||W + sBA||
            m.weight.copy_(r.base_layer.weight)
            if m.bias is not None:
                m.bias.copy_(r.base_layer.bias)
            m.lora_a.weight.copy_(r.lora_A["default"].weight)
            m.lora_b.weight.copy_(r.lora_B["default"].weight)
            m.magnitude.copy_(mag)
    return ref, ours


def _adapter_grads(ref, ours):
    pairs = []
    for name, *_ in LAYERS:
        r, m = getattr(ref, name), getattr(ours, name)
        pairs += [(r.lora_A["default"].weight.grad, m.lora_a.weight.grad),
                  (r.lora_B["default"].weight.grad, m.lora_b.weight.grad),
                  (r.lora_magnitude_vector["default"].weight.grad, m.magnitude.grad)]
    return pairs


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_logits_and_adapter_grads_match_peft(dropout):
    ref, ours = _pair(dropout)
    ref.train(), ours.train()
    x = torch.sin(torch.arange(3 * 5 * 16, dtype=torch.float32).view(3, 5, 16) * 0.37)
    torch.manual_seed(0)  # both draw one dropout mask per layer, in the same order
    out_ref = ref(x)
    torch.manual_seed(0)
    out = ours(x)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    out_ref.square().mean().backward()
    out.square().mean().backward()
    for g_ref, g in _adapter_grads(ref, ours):
        assert g is not None and g.abs().sum() > 0
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)
    # Only the adapters are DoRA's trainable parameters: A, B and the magnitude.
    assert sorted(get_adapter_params(ours)) == sorted(
        f"{n}.{p}" for n, *_ in LAYERS for p in ("lora_a.weight", "lora_b.weight", "magnitude")
    )


def test_magnitude_initialisation_matches_peft():
    ref, ours = _pair()
    for name, *_ in LAYERS:
        r, m = getattr(ref, name), getattr(ours, name)
        nn.init.zeros_(m.lora_b.weight)  # a fresh adapter, as when peft initialises
        m.initialize_dora_magnitude()
        torch.testing.assert_close(m.magnitude, r.base_layer.weight.norm(dim=1), atol=1e-6, rtol=0)
    x = torch.randn(4, 16)
    plain = Tiny(lambda i, o, b: nn.Linear(i, o, bias=b))
    for name, *_ in LAYERS:
        getattr(plain, name).load_state_dict(getattr(ours, name).state_dict(), strict=False)
    torch.testing.assert_close(ours(x), plain(x), atol=1e-6, rtol=0)  # DoRA starts as a no-op
    with torch.device("meta"):
        lazy = LoRALinear(4, 4, 2, 2.0, use_dora=True)
    with pytest.raises(RuntimeError, match="meta device"):
        lazy.initialize_dora_magnitude()


def test_merged_weight_matches_peft_merge_and_unload():
    ref, ours = _pair()
    sd = {k: v.detach().clone() for k, v in ours.state_dict().items()}
    merged = get_merged_lora_ckpt(sd, rank=RANK, alpha=ALPHA)
    assert set(merged) == {"q.weight", "q.bias", "w.weight"}
    for name, *_ in LAYERS:
        layer = getattr(ref, name)
        layer.merge()  # peft's merge, as merge_and_unload runs it per layer
        torch.testing.assert_close(merged[f"{name}.weight"], layer.base_layer.weight,
                                   atol=1e-6, rtol=0)
    x = torch.randn(2, 16)
    plain = Tiny(lambda i, o, b: nn.Linear(i, o, bias=b))
    plain.load_state_dict(merged)
    torch.testing.assert_close(plain(x), ours(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'m.magnitude': its lora_a is missing"):
        get_merged_lora_ckpt({"m.weight": torch.ones(2, 2), "m.magnitude": torch.ones(2)}, 1, 1.0)
