"""ChunkedCrossEntropyLoss against a plain shifted F.cross_entropy."""

import pytest
import torch
import torch.nn.functional as F

from torchtune.modules.loss import ChunkedCrossEntropyLoss


def reference(logits, labels):
    targets = labels[:, 1:].reshape(-1)
    flat = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum"), (targets != -100).sum()


@pytest.mark.parametrize("chunks", [1, 3, 8, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference(chunks, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 11, generator=g).to(dtype)
    labels = torch.randint(0, 11, (3, 17), generator=g)
    labels[0, :5] = -100  # a masked prompt
    labels[2, 12:] = -100  # padding
    loss, count = ChunkedCrossEntropyLoss(num_output_chunks=chunks)(logits, labels)
    ref_loss, ref_count = reference(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    assert count.item() == ref_count.item() == 3 * 16 - 4 - 5


def test_gradients_match_reference():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 7, generator=g, requires_grad=True)
    labels = torch.randint(0, 7, (2, 9), generator=g)
    ChunkedCrossEntropyLoss(num_output_chunks=4)(logits, labels)[0].backward()
    grad = logits.grad.clone()
    logits.grad = None
    reference(logits, labels)[0].backward()
    torch.testing.assert_close(grad, logits.grad)


def test_rejects_bad_chunks():
    with pytest.raises(ValueError, match="num_output_chunks"):
        ChunkedCrossEntropyLoss(num_output_chunks=0)
