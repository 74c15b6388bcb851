"""LinearCrossEntropyLoss against projecting everything and a plain shifted F.cross_entropy."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchtune.models.llama2 import llama2
from torchtune.modules.loss import ChunkedCrossEntropyLoss, LinearCrossEntropyLoss


def reference(logits, labels):
    targets = labels[:, 1:].reshape(-1)
    flat = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum"), (targets != -100).sum()


def _labels(g, b=3, s=17, v=11):
    labels = torch.randint(0, v, (b, s), generator=g)
    labels[0, :5] = -100  # a masked prompt
    labels[-1, s - 5 :] = -100  # padding
    return labels


class _Model(nn.Module):  # just the two attributes set_model_output uses
    def __init__(self, output):
        super().__init__()
        self.output = output
        self.skip_output_layer = False


@pytest.mark.parametrize("chunks", [1, 3, 8, 100])
@pytest.mark.parametrize("bias", [False, True])  # True: the generic per-chunk module path
def test_loss_and_gradients_match_reference(chunks, bias):
    g = torch.Generator().manual_seed(0)
    output = nn.Linear(6, 11, bias=bias)
    hidden = torch.randn(3, 17, 6, generator=g, requires_grad=True)
    labels = _labels(g)
    loss_fn = LinearCrossEntropyLoss(num_output_chunks=chunks, min_chunk_size=1)
    model = _Model(output)
    loss_fn.set_model_output(model)
    assert model.skip_output_layer
    loss, count = loss_fn(hidden, labels)
    (loss * 0.5).backward()  # a non-unit incoming gradient
    grads = hidden.grad.clone(), output.weight.grad.clone()
    hidden.grad = output.weight.grad = None
    ref_loss, ref_count = reference(output(hidden), labels)
    (ref_loss * 0.5).backward()
    assert loss.dtype == torch.float32 and count.item() == ref_count.item() == 3 * 16 - 4 - 5
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], output.weight.grad, rtol=1e-5, atol=1e-6)


def test_frozen_projection_gets_no_gradient_and_no_grad_mode_works():
    g = torch.Generator().manual_seed(2)
    output = nn.Linear(6, 11, bias=False).requires_grad_(False)
    hidden = torch.randn(2, 9, 6, generator=g, requires_grad=True)
    labels = _labels(g, 2, 9)
    loss_fn = LinearCrossEntropyLoss(num_output_chunks=2, min_chunk_size=1)
    loss_fn.set_model_output(_Model(output))
    loss_fn(hidden, labels)[0].backward()
    assert output.weight.grad is None and hidden.grad is not None
    with torch.no_grad():
        loss, _ = loss_fn(hidden, labels)
    torch.testing.assert_close(loss, reference(output(hidden), labels)[0])


def test_no_targets_gives_zero_loss_and_zero_gradients():
    output = nn.Linear(4, 5, bias=False)
    hidden = torch.randn(2, 3, 4, requires_grad=True)
    loss_fn = LinearCrossEntropyLoss()
    loss_fn.set_model_output(_Model(output))
    loss, count = loss_fn(hidden, torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0 and count.item() == 0 and hidden.grad.abs().sum() == 0


def test_needs_set_model_output():
    with pytest.raises(RuntimeError, match="set_model_output"):
        LinearCrossEntropyLoss()(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        LinearCrossEntropyLoss(num_output_chunks=0)
    with pytest.raises(ValueError):
        LinearCrossEntropyLoss(min_chunk_size=0)


def test_decoder_matches_chunked_loss_on_logits():
    """The whole model: hidden states + this loss == logits + ChunkedCrossEntropyLoss,
    for the loss and every parameter's gradient."""
    torch.manual_seed(0)
    model = llama2(vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
                   max_seq_len=16, intermediate_dim=48)
    tokens = torch.randint(0, 64, (2, 16))
    labels = tokens.clone()
    labels[0, :6] = -100
    ref_loss, ref_count = ChunkedCrossEntropyLoss(num_output_chunks=1)(model(tokens), labels)
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss_fn = LinearCrossEntropyLoss(num_output_chunks=3, min_chunk_size=4)
    loss_fn.set_model_output(model)
    hidden = model(tokens)
    assert hidden.shape == (2, 16, 32)
    loss, count = loss_fn(hidden, labels)
    loss.backward()
    assert count.item() == ref_count.item()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_bf16_matches_reference_loosely():
    g = torch.Generator().manual_seed(3)
    output = nn.Linear(16, 40, bias=False).to(torch.bfloat16)
    hidden = torch.randn(2, 12, 16, generator=g).to(torch.bfloat16).requires_grad_()
    labels = _labels(g, 2, 12, 40)
    loss_fn = LinearCrossEntropyLoss(num_output_chunks=3, min_chunk_size=1)
    loss_fn.set_model_output(_Model(output))
    loss, _ = loss_fn(hidden, labels)
    loss.backward()
    assert loss.dtype == torch.float32
    assert hidden.grad.dtype == output.weight.grad.dtype == torch.bfloat16
    grads = hidden.grad.clone(), output.weight.grad.clone()
    hidden.grad = output.weight.grad = None
    ref, _ = reference(output(hidden), labels)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(grads[1], output.weight.grad, rtol=5e-2, atol=5e-2)


def test_tied_output_takes_the_fused_path_and_its_gradient_reaches_the_one_weight(monkeypatch):
    """A tied decoder: the fused loss equals logits + cross-entropy, in the loss and in the
    shared weight's gradient (embedding lookup + output projection together)."""
    from torchtune.modules import TiedLinear
    from torchtune.modules.loss import _linear_cross_entropy as lce

    torch.manual_seed(0)
    model = llama2(vocab_size=64, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=32,
                   max_seq_len=16, intermediate_dim=48)
    model.output = TiedLinear(model.tok_embeddings)
    tokens = torch.randint(0, 64, (2, 16))
    labels = tokens.clone()
    labels[1, :4] = -100
    ref_loss, _ = ChunkedCrossEntropyLoss(num_output_chunks=1)(model(tokens), labels)
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    calls = []
    real_apply = lce._LinearCrossEntropyFn.apply
    monkeypatch.setattr(lce._LinearCrossEntropyFn, "apply",
                        lambda *a: calls.append(a[1]) or real_apply(*a))
    loss_fn = LinearCrossEntropyLoss(num_output_chunks=2, min_chunk_size=4)
    loss_fn.set_model_output(model)
    loss, _ = loss_fn(model(tokens), labels)
    loss.backward()
    assert len(calls) == 1 and calls[0] is model.tok_embeddings.weight  # the fused path
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert [n for n, _ in model.named_parameters()].count("tok_embeddings.weight") == 1
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_final_softcap_is_applied_as_the_model_applies_it():
    """A model with a final-logit soft-cap (Gemma 2): the loss, which skips the model's
    output layer, caps each chunk's logits itself; the chunked loss sees the model's
    (already capped) logits. Both equal the reference on the capped logits."""
    import dataclasses

    from torchtune.models._decoder import build_decoder, llama_description

    description = dataclasses.replace(llama_description(
        vocab_size=11, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=8, max_seq_len=32,
        hidden_dim=16, attn_dropout=0.0, norm_eps=1e-5, rope_base=10_000), final_softcap=0.5)
    torch.manual_seed(0)
    model = build_decoder(description)
    with torch.no_grad():
        model.output.weight.mul_(20.0)  # logits well past the cap, so capping shows
    g = torch.Generator().manual_seed(0)
    tokens, labels = torch.randint(0, 11, (3, 17), generator=g), _labels(g)
    logits = model(tokens)
    assert logits.abs().max() <= 0.5
    expected, count = reference(logits, labels)

    chunked_total, chunked_count = ChunkedCrossEntropyLoss(num_output_chunks=3)(logits, labels)
    torch.testing.assert_close(chunked_total, expected)
    fused = LinearCrossEntropyLoss(num_output_chunks=3, min_chunk_size=1)
    fused.set_model_output(model)
    hidden = model(tokens)  # the model now returns its final hidden states
    total, fused_count = fused(hidden, labels)
    assert fused_count == count == chunked_count
    uncapped, _ = reference(model.output(hidden), labels)
    assert abs(uncapped - expected) > 1.0  # without the cap the loss is far off
    # fp32 sums of ~40 terms of size ~2.4: rounding well under 1e-5 relative.
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)
