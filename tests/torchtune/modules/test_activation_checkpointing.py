"""Activation checkpointing changes memory, not numbers."""

import torch

from torchtune.models.llama2 import llama2
from torchtune.modules import set_activation_checkpointing


def loss_and_grads(model, tokens):
    model.zero_grad()
    logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def count_saved_tensors(model, tokens) -> int:
    """Tensors autograd keeps for backward (checkpointed regions keep theirs hidden)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        model(tokens).sum()
    return len(saved)


def test_gradients_identical_with_and_without_checkpointing():
    torch.manual_seed(0)
    model = llama2(vocab_size=40, num_layers=3, num_heads=4, num_kv_heads=2, embed_dim=16,
                   max_seq_len=16, intermediate_dim=32)
    tokens = (torch.arange(24).view(2, 12) * 7) % 40
    names = list(model.state_dict())
    ref_loss, ref_grads = loss_and_grads(model, tokens)
    saved_plain = count_saved_tensors(model, tokens)

    assert set_activation_checkpointing(model) == 3
    assert set_activation_checkpointing(model) == 0  # idempotent
    assert list(model.state_dict()) == names  # no wrapper prefix in checkpoint names
    assert count_saved_tensors(model, tokens) < saved_plain / 3  # activations not kept
    loss, grads = loss_and_grads(model, tokens)
    assert torch.equal(loss, ref_loss)
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name], grad), name
    assert any(g.abs().sum() > 0 for g in grads.values())
