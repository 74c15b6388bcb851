import torch
from torch import nn

from torchtune.training import scale_grads_


def _model_with_grads():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    model[0].weight.requires_grad_(False)  # a frozen weight has no grad
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) * 0.1 + i)
    model(torch.arange(6, dtype=torch.float32).reshape(2, 3)).sum().backward()
    return model


def test_scale_grads_multiplies_every_grad_in_place():
    model = _model_with_grads()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    grad_ids = {n: id(p.grad) for n, p in model.named_parameters() if p.grad is not None}
    scale_grads_(model, torch.tensor(0.25))
    assert set(before) == {"0.bias", "1.weight"}
    for n, p in model.named_parameters():
        if n in before:
            torch.testing.assert_close(p.grad, before[n] * 0.25, rtol=0, atol=0)
            assert id(p.grad) == grad_ids[n]
    assert model[0].weight.grad is None


def test_scale_grads_accepts_a_float():
    model = _model_with_grads()
    before = model[1].weight.grad.clone()
    scale_grads_(model, 1 / 8)
    torch.testing.assert_close(model[1].weight.grad, before / 8, rtol=0, atol=0)
