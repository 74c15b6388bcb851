"""QLoRA: LoRALinear / FrozenNF4Linear with an NF4 base (torchao), against a full-precision
LoRALinear holding the dequantized weight and against bitsandbytes' NF4."""

import pytest
import torch
from torch import nn

from torchtune.models.llama2 import lora_llama2
from torchtune.modules.low_precision import FrozenNF4Linear, dequantize, is_nf4, to_nf4
from torchtune.modules.peft import (
    LoRALinear,
    get_adapter_params,
    get_merged_lora_ckpt,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)

D = 128  # 128 x 128 = 16384 values: one NF4 double-quantization group of 256 blocks of 64
# torchao's NF4 levels (rounded to 4 decimals); the widest gap is between -1 and -0.6962.
NF4_HALF_GAP = (1.0 - 0.6962) / 2


def _weight(out_dim=D, in_dim=D, k=0.37):
    idx = torch.arange(out_dim * in_dim, dtype=torch.float32).view(out_dim, in_dim)
    return torch.sin(idx * k) * (1 + (idx % 7))  # blocks with different absmax


def _unpack_codes(nf4):
    """torchao packs two 4-bit codes per byte, the first in the high nibble."""
    data = nf4.quantized_data
    return torch.stack([data >> 4, data & 15], dim=-1).flatten()


def _quantized_pair(**kw):
    q = LoRALinear(D, D, rank=4, alpha=8.0, use_bias=True, quantize_base=True, **kw)
    q.load_state_dict({"weight": _weight(), "bias": torch.linspace(-1, 1, D)}, strict=False)
    for i, p in enumerate((q.lora_a.weight, q.lora_b.weight)):
        with torch.no_grad():
            p.copy_(torch.cos(torch.arange(p.numel()).view(p.shape) * (0.3 + i)) / 10)
    plain = LoRALinear(D, D, rank=4, alpha=8.0, use_bias=True, **kw)
    plain.load_state_dict({**q.state_dict(), "weight": dequantize(q.weight)})
    if kw.get("use_dora"):
        q.initialize_dora_magnitude(), plain.initialize_dora_magnitude()
    return q, plain


@pytest.mark.parametrize("use_dora", [False, True])
def test_quantized_base_equals_lora_on_the_dequantized_weight(use_dora):
    q, plain = _quantized_pair(use_dora=use_dora)
    assert is_nf4(q.weight) and not q.weight.requires_grad
    x = torch.cos(torch.arange(2 * 3 * D, dtype=torch.float32).view(2, 3, D) * 0.11)
    out_q, out = q(x), plain(x)
    torch.testing.assert_close(out_q, out, atol=1e-5, rtol=0)
    out_q.square().mean().backward()
    out.square().mean().backward()
    for name in q.adapter_params():
        torch.testing.assert_close(q.get_parameter(name).grad, plain.get_parameter(name).grad,
                                   atol=1e-5, rtol=0)


def test_dequantized_error_is_within_the_nf4_bound():
    w = _weight()
    err = (dequantize(to_nf4(w)) - w).abs().view(-1, 64)
    absmax = w.view(-1, 64).abs().amax(dim=1)  # the 256 block scalers
    # Bound: half the widest gap between NF4 levels times the block's absmax, plus the
    # error of the int8 double-quantized scaler: one step, 2 * max|absmax - mean| / 256
    # (a half step of rounding, a whole one where 128 clamps to 127).
    scaler_step = 2 * (absmax - absmax.mean()).abs().max() / 256
    bound = absmax * NF4_HALF_GAP + scaler_step
    assert (err <= bound.unsqueeze(1) + 1e-6).all()
    assert err.max() > 0.5 * bound.min()  # and the bound is not vacuous


def test_codes_and_values_equal_bitsandbytes():
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    w = _weight()
    packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4")
    bnb_codes = torch.stack([packed.flatten() >> 4, packed.flatten() & 15], dim=-1).flatten()
    nf4 = to_nf4(w)
    # Same 16-level table in the same order, same nearest-level rounding on the same blocks
    # of 64 scaled by their absmax. torchao writes the table to 4 decimals, bitsandbytes in
    # full, so a decision boundary (the midpoint of two levels) differs by up to 5e-5: the
    # codes are equal for every value farther than that (6e-5 with fp32 slack) from a
    # boundary, and where they differ, they are neighbours.
    ours = _unpack_codes(nf4)
    same = ours == bnb_codes
    exact_levels = bnb_f.get_4bit_type("nf4", device="cpu").float()
    boundaries = (exact_levels[1:] + exact_levels[:-1]) / 2
    scaled = (w.view(-1, 64) / w.view(-1, 64).abs().amax(dim=1, keepdim=True)).flatten()
    to_boundary = (scaled.unsqueeze(1) - boundaries).abs().min(dim=1).values
    assert torch.equal(ours[to_boundary > 6e-5], bnb_codes[to_boundary > 6e-5])
    assert ((ours.long() - bnb_codes.long()).abs()[~same] == 1).all()
    assert same.float().mean() > 0.999
    # What differs: bitsandbytes keeps each absmax in fp32 (no double quantization here),
    # torchao stores it as int8 codes in groups of 256 (QLoRA's double quantization). With
    # the scaler taken exactly, torchao's codes dequantize to bitsandbytes' values.
    torch.testing.assert_close(state.absmax, w.view(-1, 64).abs().amax(dim=1), atol=0, rtol=0)
    levels = nf4.nf4.float()
    exact_scaler = levels[_unpack_codes(nf4).long()].view(-1, 64) * state.absmax.unsqueeze(1)
    bnb_values = bnb_f.dequantize_4bit(packed, state).view(-1, 64)
    torch.testing.assert_close(exact_scaler[same.view(-1, 64)], bnb_values[same.view(-1, 64)],
                               atol=1e-4 * 7, rtol=0)  # table rounding x absmax (<= 7)


@pytest.mark.parametrize("on_meta", [False, True])
def test_loading_a_full_precision_state_dict_quantizes_it(on_meta):
    w = _weight()
    with torch.device("meta" if on_meta else "cpu"):
        lora = LoRALinear(D, D, rank=4, alpha=8.0, quantize_base=True)
        frozen = FrozenNF4Linear(D, D)
    # assign=True (a model built on meta) puts the incoming tensor in place: it must be NF4.
    lora.load_state_dict({"weight": w}, strict=False, assign=on_meta)
    frozen.load_state_dict({"weight": w}, assign=on_meta)
    expected = to_nf4(w)
    for module in (lora, frozen):
        assert is_nf4(module.weight) and isinstance(module.weight, nn.Parameter)
        assert module.weight.device.type == "cpu" and not module.weight.requires_grad
        assert torch.equal(module.weight.quantized_data, expected.quantized_data)
        assert torch.equal(dequantize(module.weight), dequantize(expected))
    # A bf16 model quantizes the bf16 rounding of the checkpoint.
    with torch.device("cpu"):
        torch.set_default_dtype(torch.bfloat16)
        try:
            half = FrozenNF4Linear(D, D)
        finally:
            torch.set_default_dtype(torch.float32)
    half.load_state_dict({"weight": w})
    assert half.weight.dtype == torch.bfloat16
    assert torch.equal(dequantize(half.weight), dequantize(to_nf4(w.bfloat16())))


def test_nf4_size_is_checked():
    with pytest.raises(ValueError, match="multiple of 16384"):
        LoRALinear(96, 64, rank=2, alpha=2.0, quantize_base=True)


def test_merge_dequantizes_nf4_bases():
    q, plain = _quantized_pair(use_dora=True)
    merged = get_merged_lora_ckpt(q.state_dict(), rank=4, alpha=8.0, dtype=torch.bfloat16)
    expected = get_merged_lora_ckpt(plain.state_dict(), rank=4, alpha=8.0)
    assert not is_nf4(merged["weight"]) and merged["weight"].dtype == torch.bfloat16
    torch.testing.assert_close(merged["weight"], expected["weight"].bfloat16(), atol=0, rtol=0)


def test_merge_dtype_applies_to_every_floating_tensor():
    """The recipes pass the input checkpoint's dtype: a bf16-compute run of an fp32 input
    writes every tensor (merged or not) in fp32."""
    sd = {
        "w.weight": torch.ones(4, 4, dtype=torch.bfloat16),
        "w.lora_a.weight": torch.ones(2, 4, dtype=torch.bfloat16),
        "w.lora_b.weight": torch.ones(4, 2, dtype=torch.bfloat16),
        "norm.scale": torch.ones(4, dtype=torch.bfloat16),
        "step": torch.tensor(3),
    }
    merged = get_merged_lora_ckpt(sd, rank=2, alpha=2.0, dtype=torch.float32)
    assert {k: v.dtype for k, v in merged.items()} == {
        "w.weight": torch.float32, "norm.scale": torch.float32, "step": torch.int64,
    }
    assert torch.equal(merged["w.weight"], torch.full((4, 4), 3.0))


def _tiny(**kw):
    # n_kv = n_h so that k/v are 128 x 128 (an NF4 weight needs a multiple of 16384 values).
    return lora_llama2(["q_proj", "v_proj"], apply_lora_to_mlp=False, vocab_size=64,
                       num_layers=2, num_heads=4, num_kv_heads=4, embed_dim=D, max_seq_len=16,
                       intermediate_dim=256, lora_rank=4, lora_alpha=8.0, **kw)


@pytest.mark.parametrize("use_dora", [False, True])
def test_qlora_model_trains_only_its_adapters(use_dora):
    torch.manual_seed(0)
    base_sd = {k: v for k, v in _tiny().state_dict().items() if "lora_" not in k}
    model = _tiny(quantize_base=True, use_dora=use_dora)
    missing, unexpected = model.load_state_dict(base_sd, strict=False)
    validate_missing_and_unexpected_for_lora(model, base_missing=missing,
                                             base_unexpected=unexpected)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.initialize_dora_magnitude()
    layer = model.layers[0]
    for linear in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.output_proj, layer.mlp.w1):
        assert is_nf4(linear.weight)
    assert isinstance(layer.attn.k_proj, FrozenNF4Linear) and not is_nf4(model.output.weight)
    # Same state-dict names as the full-precision LoRA model: checkpoints and key maps hold.
    assert set(model.state_dict()) == set(_tiny(use_dora=use_dora).state_dict())
    adapters = get_adapter_params(model)
    assert any(k.endswith("magnitude") for k in adapters) == use_dora
    set_trainable_params(model, adapters)
    tokens = torch.arange(2 * 8).view(2, 8) % 64
    model(tokens).float().square().mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in adapters), name
