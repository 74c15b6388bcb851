"""Per-document attention for block-causal rows (packed or padding-free) gives what the
dense masked attention gives, and any other mask keeps the dense path."""

import torch

from torchtune.data import block_causal_mask
from torchtune.data._collate import padding_free_collate, padded_collate
from torchtune.models.llama2 import llama2
from torchtune.modules import attention
from torchtune.modules.attention import document_lengths


def _positions(seq_lens):
    return torch.stack([torch.cat([torch.arange(n) for n in row]) for row in seq_lens])


def test_document_lengths_reads_block_causal_masks_only():
    seq_lens = [[2, 3, 1], [6]]
    mask, pos = block_causal_mask(seq_lens), _positions(seq_lens)
    assert document_lengths(mask, pos) == seq_lens
    assert document_lengths(mask, None) is None
    other = mask.clone()
    other[0, 4, 0] = True  # attends across a boundary: not block-causal
    assert document_lengths(other, pos) is None
    shifted = pos.clone()
    shifted[0, 2] = 5  # positions that do not restart where the mask's documents do
    assert document_lengths(mask, shifted) is None


def _model():
    torch.manual_seed(0)
    m = llama2(vocab_size=50, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
               max_seq_len=16, intermediate_dim=48)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)  # attention far from uniform, so a leak would show
    return m


def test_per_document_attention_matches_dense_mask_forward_and_backward(monkeypatch):
    m = _model()
    seq_lens = [[5, 7, 4], [16], [1, 15]]
    tokens = torch.randint(0, 50, (3, 16))
    mask, pos = block_causal_mask(seq_lens), _positions(seq_lens)
    out = m(tokens, mask=mask, input_pos=pos)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    monkeypatch.setattr(attention, "document_lengths", lambda mask, input_pos: None)  # dense SDPA
    ref = m(tokens, mask=mask, input_pos=pos)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for n, p in m.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_padding_free_batch_gives_the_padded_batch_logits():
    """Samples end to end in one row (longer than max_seq_len) == the same samples padded."""
    m = _model().eval()
    items = [{"tokens": list(range(1, 1 + n)), "labels": list(range(2, 2 + n))} for n in (9, 16, 3)]
    free = padding_free_collate(items)
    assert free["tokens"].shape == (1, 28) and free["mask"].shape == (1, 28, 28)
    assert free["labels"][0, [0, 9, 25]].tolist() == [-100, -100, -100]  # sample boundaries
    assert free["input_pos"][0, 9:12].tolist() == [0, 1, 2]
    padded = padded_collate(items)
    with torch.no_grad():
        got = m(free["tokens"], mask=free["mask"], input_pos=free["input_pos"])[0]
        ref = m(padded["tokens"])
    start = 0
    for i, item in enumerate(items):
        n = len(item["tokens"])
        torch.testing.assert_close(got[start : start + n], ref[i, :n], rtol=1e-5, atol=1e-5)
        start += n
    # the same targets, apart from each sample's first label (never a target when padded)
    assert int((free["labels"] != -100).sum()) == int((padded["labels"][:, 1:] != -100).sum())
