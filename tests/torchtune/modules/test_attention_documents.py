"""Attention over documents (packed or padding-free rows) from their lengths: the numbers
of the dense block-causal mask, without ever allocating S x S."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from torchtune.data import block_causal_mask
from torchtune.data._collate import padded_collate, padding_free_collate
from torchtune.models.llama2 import llama2
from torchtune.modules import _documents
from torchtune.modules._documents import Documents, block_causal_from_seq_lens


def _positions(seq_lens):
    return torch.stack([torch.cat([torch.arange(n) for n in row if n]) for row in seq_lens])


def _model(max_seq_len=16, vocab_size=50):
    torch.manual_seed(0)
    m = llama2(vocab_size=vocab_size, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
               max_seq_len=max_seq_len, intermediate_dim=48)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)  # attention far from uniform, so a leak would show
    return m


def _forward_backward(m, tokens, **kwargs):
    m.zero_grad()
    out = m(tokens, **kwargs)
    out.square().sum().backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters()}


def test_documents_read_zero_padded_lengths():
    docs = Documents.from_seq_lens(torch.tensor([[2, 3, 1], [6, 0, 0]]), 6)
    assert docs.lengths == [[2, 3, 1], [6]] and docs.max_len == 6
    assert docs.cu_seqlens.tolist() == [0, 2, 5, 6, 12] and docs.cu_seqlens.dtype == torch.int32
    with pytest.raises(ValueError, match="row 1"):
        Documents.from_seq_lens(torch.tensor([[2, 4], [5, 0]]), 6)


def test_seq_lens_match_the_dense_mask_forward_and_backward():
    """Rows of several documents, zero-padded lengths; outputs and every gradient."""
    m = _model()
    seq_lens = [[5, 7, 4], [16, 0, 0], [1, 15, 0]]
    tokens = torch.randint(0, 50, (3, 16))
    pos = _positions(seq_lens)
    out, grads = _forward_backward(m, tokens, input_pos=pos, seq_lens=torch.tensor(seq_lens))
    dense = block_causal_mask([[n for n in row if n] for row in seq_lens])
    assert torch.equal(block_causal_from_seq_lens(torch.tensor(seq_lens), 16), dense)
    ref, ref_grads = _forward_backward(m, tokens, mask=dense, input_pos=pos)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)


def _output_and_input_grad(m, tokens, **kwargs):
    """The model's output and the gradient of ``sum(output**2)`` at its input embeddings."""
    held = {}

    def leaf_embeddings(module, inputs, output):
        held["x"] = output.detach().requires_grad_()
        return held["x"]

    hook = m.tok_embeddings.register_forward_hook(leaf_embeddings)
    try:
        out = m(tokens, **kwargs)
    finally:
        hook.remove()
    out.square().sum().backward()
    return out.detach(), held["x"].grad


def test_each_document_equals_the_document_run_alone():
    """Padding-free and packed rows: outputs and input gradients per document, against a
    run of that document by itself (an independent reference: no mask, no lengths)."""
    m = _model(max_seq_len=32).eval()
    torch.manual_seed(2)
    lengths = [9, 16, 3, 12]
    items = [{"tokens": torch.randint(0, 50, (n,)).tolist(), "labels": [0] * n} for n in lengths]
    free = padding_free_collate(items)
    packed = padded_collate([  # two packed rows of 20: [9, 11 padding], [16, 3, 1 padding]
        {"tokens": items[0]["tokens"] + [0] * 11, "labels": [0] * 20,
         "input_pos": list(range(9)) + list(range(11)), "seq_lens": [9, 11]},
        {"tokens": items[1]["tokens"] + items[2]["tokens"] + [0], "labels": [0] * 20,
         "input_pos": list(range(16)) + list(range(3)) + [0], "seq_lens": [16, 3, 1]},
    ])
    got_free, grad_free = _output_and_input_grad(
        m, free["tokens"], input_pos=free["input_pos"], seq_lens=free["seq_lens"])
    got_packed, grad_packed = _output_and_input_grad(
        m, packed["tokens"], input_pos=packed["input_pos"], seq_lens=packed["seq_lens"])
    alone = [_output_and_input_grad(m, torch.tensor([it["tokens"]])) for it in items]
    start = 0
    for (out, grad), n in zip(alone, lengths):
        torch.testing.assert_close(got_free[0, start : start + n], out[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad_free[0, start : start + n], grad[0], rtol=1e-4, atol=1e-5)
        start += n
    for (row, start), (out, grad) in zip([(0, 0), (1, 0), (1, 16)], alone):
        n = out.shape[1]
        torch.testing.assert_close(got_packed[row, start : start + n], out[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad_packed[row, start : start + n], grad[0], rtol=1e-4, atol=1e-5)


def test_padding_free_batch_gives_the_padded_batch_logits():
    """Samples end to end in one row (longer than max_seq_len) == the same samples padded."""
    m = _model().eval()
    items = [{"tokens": list(range(1, 1 + n)), "labels": list(range(2, 2 + n))} for n in (9, 16, 3)]
    free = padding_free_collate(items)
    assert free["tokens"].shape == (1, 28) and "mask" not in free
    assert free["seq_lens"].tolist() == [[9, 16, 3]]
    assert free["labels"][0, [0, 9, 25]].tolist() == [-100, -100, -100]  # sample boundaries
    assert free["input_pos"][0, 9:12].tolist() == [0, 1, 2]
    padded = padded_collate(items)
    with torch.no_grad():
        got = m(free["tokens"], input_pos=free["input_pos"], seq_lens=free["seq_lens"])[0]
        ref = m(padded["tokens"])
    start = 0
    for i, item in enumerate(items):
        n = len(item["tokens"])
        torch.testing.assert_close(got[start : start + n], ref[i, :n], rtol=1e-5, atol=1e-5)
        start += n
    # the same targets, apart from each sample's first label (never a target when padded)
    assert int((free["labels"] != -100).sum()) == int((padded["labels"][:, 1:] != -100).sum())


def _reference_varlen(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, causal, enable_gqa):
    """What ``varlen_attn`` computes, written out: causal attention per [start, end) segment
    of the flattened tokens, query heads sharing kv heads in groups."""
    assert causal and torch.equal(cu_seq_q, cu_seq_k)
    assert max_q == max_k == int((cu_seq_q[1:] - cu_seq_q[:-1]).max())
    group = q.shape[1] // k.shape[1]
    assert enable_gqa == (group > 1)
    out = torch.empty_like(q)
    bounds = cu_seq_q.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs = q[start:end].transpose(0, 1)  # [n_h, len, h_d]
        ks = k[start:end].transpose(0, 1).repeat_interleave(group, 0)
        vs = v[start:end].transpose(0, 1).repeat_interleave(group, 0)
        scores = (qs @ ks.transpose(1, 2)) / q.shape[-1] ** 0.5
        mask = torch.ones(end - start, end - start, dtype=torch.bool).tril()
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        out[start:end] = (weights @ vs).transpose(0, 1)
    return out


# varlen_attn's signature as torch 2.13 has it, and as torch 2.9-2.11 had it (is_causal, no
# enable_gqa: a GPU run on torch 2.11 failed on enable_gqa before the call followed it).
def _varlen_2_13(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                 window_size=(-1, -1), enable_gqa=False):
    return _reference_varlen(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k,
                             causal=window_size == (-1, 0), enable_gqa=enable_gqa)


def _varlen_2_11(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, is_causal=False, return_aux=None, scale=None):
    return _reference_varlen(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, causal=is_causal, enable_gqa=False)


@pytest.mark.parametrize("varlen", [_varlen_2_13, _varlen_2_11], ids=["torch-2.13", "torch-2.11"])
def test_varlen_kernel_gets_the_flattened_documents(monkeypatch, varlen):
    """The CUDA bf16 path hands every document of the batch to one ``varlen_attn`` call.
    No GPU here: the kernel is replaced by its written-out definition, which checks the
    layout, offsets and flags our code passes, and the result must match per-document SDPA."""
    calls = []

    @functools.wraps(varlen)
    def fake_varlen(*args, **kwargs):
        calls.append(args[3].tolist())
        return varlen(*args, **kwargs)

    m = _model()
    seq_lens = torch.tensor([[5, 7, 4], [16, 0, 0]])
    tokens = torch.randint(0, 50, (2, 16))
    pos = _positions(seq_lens.tolist())
    ref, ref_grads = _forward_backward(m, tokens, input_pos=pos, seq_lens=seq_lens)
    monkeypatch.setattr(_documents, "load_varlen_attn", lambda: fake_varlen)
    monkeypatch.setattr(_documents, "uses_varlen", lambda q, dropout_p: True)
    out, grads = _forward_backward(m, tokens, input_pos=pos, seq_lens=seq_lens)
    assert calls == [[0, 5, 12, 16, 32]] * 2  # one call per layer, both rows together
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)


def test_varlen_only_where_flash_attention_runs():
    q = torch.zeros(1, 4, 2, 64)
    assert not _documents.uses_varlen(q, 0.0)  # CPU
    assert not _documents.uses_varlen(q.bfloat16(), 0.0)  # CPU, even in bf16


class _LargestTensor(TorchDispatchMode):
    """Records the most elements any operation produced."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_s_by_s_tensor_on_the_padding_free_path():
    """160 samples of 250 tokens in one row (S = 40,000): collate, forward and backward never
    make a tensor of S x S elements (today's dense mask would be 1.6e9)."""
    m = _model(max_seq_len=256, vocab_size=64)
    torch.manual_seed(1)
    items = [{"tokens": torch.randint(0, 64, (250,)).tolist(), "labels": [1] * 250}] * 160
    with _LargestTensor() as probe:
        batch = padding_free_collate(items)
        out = m(batch["tokens"], input_pos=batch["input_pos"], seq_lens=batch["seq_lens"])
        F.cross_entropy(out[0], batch["labels"][0]).backward()
    s = batch["tokens"].shape[1]
    assert s == 40_000
    assert probe.largest <= s * 64  # the logits [S, v]: linear in S


def test_compiled_model_takes_seq_lens_through_the_dense_mask(monkeypatch):
    """torch.compile cannot trace the per-document loop; the compiled forward builds the
    block-causal mask instead, with the same numbers."""
    from torchtune.modules import transformer

    built = []

    def spy(seq_lens, seq_len):
        built.append(seq_len)
        return block_causal_from_seq_lens(seq_lens, seq_len)

    monkeypatch.setattr(transformer, "block_causal_from_seq_lens", spy)
    m = _model().eval()
    seq_lens = torch.tensor([[5, 7, 4], [16, 0, 0]])
    tokens = torch.randint(0, 50, (2, 16))
    pos = _positions(seq_lens.tolist())
    with torch.no_grad():
        ref = m(tokens, input_pos=pos, seq_lens=seq_lens)
        compiled = torch.compile(m, backend="eager")
        got = compiled(tokens, input_pos=pos, seq_lens=seq_lens)
    assert built == [16]  # only the compiled call took the dense path
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

