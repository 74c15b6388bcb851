"""The attention kernels against a float64 reference: sliding window, soft-cap, custom
scale, GQA, explicit masks, documents and KV-cache decoding.

Every kernel reachable on CPU runs in fp32 and is compared with ``eager_attention`` run in
float64 on a mask built here, independently of the kernels (``allowed``), within the fp32
error bound ``FP32_BOUND`` derived below. The window semantics themselves are checked
against Hugging Face's mask function and against a loop over each query's keys.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from torchtune._errors import UserValueError
from torchtune.modules import MultiHeadAttention, RotaryPositionalEmbeddings
from torchtune.modules import _attention_kernels as kernels
from torchtune.modules import _documents
from torchtune.modules._attention_kernels import attend, eager_attention
from torchtune.modules._documents import Documents, block_causal_from_seq_lens

B, N_H, S, H_D = 2, 4, 11, 8

# Uncompiled FlexAttention (the CUDA kernel's wiring, run on CPU) warns that it is slow.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _fp32_bound(h_d: int, s_kv: int, scale: float) -> float:
    """Worst-case |fp32 - exact| of one output for inputs in [-1, 1].

    A score q.k*scale has at most ``gamma(h_d) * h_d * scale`` rounding error (Higham's
    dot-product bound, |q_i k_i| <= 1) plus ``u`` per later rounding (scale, soft-cap,
    exp); tanh is 1-Lipschitz, so the soft-cap does not enlarge it. A perturbation d of
    the scores moves the softmax weights by at most 2d in l1, hence the output (|v| <= 1)
    by 2d; the weighted sum over s_kv values adds ``gamma(s_kv)``.
    """
    u = 2.0 ** -24
    gamma = lambda n: n * u / (1 - n * u)  # noqa: E731
    score_error = gamma(h_d) * h_d * scale + 4 * u * h_d * scale
    return 2 * score_error + gamma(s_kv) + 4 * u


SCALE_DEFAULT = 1 / math.sqrt(H_D)
FP32_BOUND = _fp32_bound(H_D, S, max(SCALE_DEFAULT, 0.7))
assert FP32_BOUND <= 1e-5, FP32_BOUND  # the brief's tolerance is within what fp32 owes


def _inputs(n_kv: int, s: int = S, s_kv: int = S, b: int = B):
    """Deterministic q, k, v in [-1, 1], far from uniform attention."""
    def fill(*shape, freq):
        return torch.sin(torch.arange(math.prod(shape), dtype=torch.float64) * freq).view(shape)
    q = fill(b, N_H, s, H_D, freq=0.71)
    return q, fill(b, n_kv, s_kv, H_D, freq=1.37), fill(b, n_kv, s_kv, H_D, freq=0.53)


def allowed(q_idx, s_kv, window=None, mask=None):
    """The reference mask, [b or 1, 1, s, s_kv]: causal (and window) on key indices, and
    ``mask`` [b, s, s_kv]. Without a window but with a mask: the mask alone."""
    i = torch.as_tensor(list(q_idx) if isinstance(q_idx, range) else q_idx)
    i = i.view(1, -1) if i.dim() == 1 else i  # [b or 1, s]
    i, j = i[:, :, None], torch.arange(s_kv)
    ok = j <= i  # [b or 1, s, s_kv]
    if window is not None:
        ok = ok & (i - j < window)
    if mask is not None:
        ok = mask & ok if window is not None else mask
    return ok[:, None]


def reference(q, k, v, ok, scale=None, softcap=None):
    return eager_attention(q.double(), k.double(), v.double(), mask=ok, scale=scale, softcap=softcap)


# (scale, softcap, window): window shorter than the sequence, only the query itself, >= the
# sequence (plain causal), soft-cap, custom scale, and all three at once.
CASES = {
    "window4": (None, None, 4),
    "window1": (None, None, 1),
    "window_ge_seq": (None, None, S + 3),
    "softcap": (None, 2.0, None),
    "scale": (0.7, None, None),
    "all": (0.7, 1.5, 3),
    "plain": (None, None, None),
}


def _kernel(name):
    """Each kernel reachable on CPU, called as attend is."""
    if name == "attend":
        return attend
    if name == "banded_blocks_of_3":  # several query blocks, each with its own key range
        return lambda q, k, v, **kw: kernels.banded_attention(q, k, v, block_size=3, **kw)
    if name == "flex_uncompiled":  # the CUDA kernel's masks and score_mod, computed eagerly
        return lambda q, k, v, **kw: kernels.flex_masked_attention(q, k, v, compiled=False, **kw)
    raise AssertionError(name)


KERNELS = ["attend", "banded_blocks_of_3", "flex_uncompiled"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n_kv", [2, 4], ids=["gqa", "mha"])
def test_causal_kernels_match_the_float64_reference(kernel, case, n_kv):
    scale, softcap, window = CASES[case]
    q, k, v = _inputs(n_kv)
    got = _kernel(kernel)(
        q.float(), k.float(), v.float(), scale=scale, softcap=softcap, window=window)
    expected = reference(q, k, v, allowed(range(S), S, window), scale, softcap)
    torch.testing.assert_close(got.double(), expected, atol=FP32_BOUND, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", ["window4", "window_ge_seq", "softcap", "all"])
def test_explicit_mask_kernels_match_the_float64_reference(kernel, case):
    """A mask that also allows some later keys: with a window they stay out (the window is
    causal); with only a soft-cap the mask alone decides, as SDPA's mask does."""
    scale, softcap, window = CASES[case]
    i, j = torch.arange(S)[:, None], torch.arange(S)
    mask = torch.stack([((i + 2 * j + row) % 3 != 1) | (i == j) for row in range(B)])  # [b, s, s]
    q, k, v = _inputs(2)
    got = _kernel(kernel)(
        q.float(), k.float(), v.float(), mask=mask, scale=scale, softcap=softcap, window=window)
    expected = reference(q, k, v, allowed(range(S), S, window, mask=mask), scale, softcap)
    torch.testing.assert_close(got.double(), expected, atol=FP32_BOUND, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kv_cache_slots_bound_the_window(kernel):
    """Queries at cache slots (different per row) over a cache of 16 slots, with the causal
    cache mask the decoder builds: the window counts back from each query's slot."""
    q, k, v = _inputs(2, s=3, s_kv=16)
    q_idx = torch.tensor([[5, 6, 7], [9, 10, 11]])
    mask = torch.ones(16, 16, dtype=torch.bool).tril()[q_idx]  # [b, s, L]
    got = _kernel(kernel)(q.float(), k.float(), v.float(), mask=mask, q_idx=q_idx, softcap=2.0, window=4)
    expected = reference(q, k, v, allowed(q_idx, 16, 4, mask=mask), softcap=2.0)
    torch.testing.assert_close(got.double(), expected, atol=_fp32_bound(H_D, 16, SCALE_DEFAULT), rtol=0)


def _doc_reference(q, k, v, lengths, scale, softcap, window):
    """Document by document, each as its own row: positions restart per document."""
    rows = []
    for i, row in enumerate(lengths):
        parts = zip(*(t[i : i + 1].split(row, dim=2) for t in (q, k, v)))
        rows.append(torch.cat([
            reference(qd, kd, vd, allowed(range(n), n, window), scale, softcap)
            for (qd, kd, vd), n in zip(parts, row)
        ], dim=2))
    return torch.cat(rows)


def _fake_varlen(calls):
    """``varlen_attn`` as torch 2.13 declares it, computed by ``eager_attention`` per
    segment with FlashAttention's window_size=(left, 0) semantics."""
    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None,
               window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None,
               num_splits=None):
        calls.append(window_size)
        left, right = window_size
        assert right == 0  # causal
        out = torch.empty_like(q)
        bounds = cu_q.tolist()
        for start, end in zip(bounds[:-1], bounds[1:]):
            seg = [t[start:end].transpose(0, 1)[None] for t in (q, k, v)]  # [1, n, len, h_d]
            i, j = torch.arange(end - start)[:, None], torch.arange(end - start)
            ok = (j <= i) & ((left < 0) | (i - j <= left))
            out[start:end] = eager_attention(*seg, mask=ok, scale=scale)[0].transpose(0, 1)
        return out
    return varlen


@pytest.mark.parametrize("kernel", ["per_document", "flex_uncompiled", "varlen_fake"])
@pytest.mark.parametrize("case", ["window4", "window_ge_seq", "softcap", "all", "plain"])
def test_documents_window_restarts_per_document(kernel, case, monkeypatch):
    """Rows of several documents: the window counts from each document's start."""
    scale, softcap, window = CASES[case]
    seq_lens = torch.tensor([[4, 7, 0], [2, 6, 3]])
    docs = Documents.from_seq_lens(seq_lens, S)
    q, k, v = _inputs(2)
    qf, kf, vf = q.float(), k.float(), v.float()
    calls = []
    if kernel == "flex_uncompiled":
        # on CPU flex_attention runs uncompiled: the CUDA kernel's masks, computed eagerly
        monkeypatch.setattr(kernels, "uses_flex", lambda q, dropout_p: True)
    if kernel == "varlen_fake":
        monkeypatch.setattr(_documents, "uses_varlen", lambda q, dropout_p: True)
        monkeypatch.setattr(_documents, "load_varlen_attn", lambda: _fake_varlen(calls))
    got = attend(qf, kf, vf, documents=docs, scale=scale, softcap=softcap, window=window)
    expected = _doc_reference(q, k, v, docs.lengths, scale, softcap, window)
    torch.testing.assert_close(got.double(), expected, atol=FP32_BOUND, rtol=0)
    if kernel == "varlen_fake":  # the window went to varlen_attn, unless a soft-cap forbids it
        effective = window if window is not None and window < docs.max_len else None
        assert calls == ([] if softcap is not None else [(-1 if effective is None else effective - 1, 0)])


def test_window_semantics_match_hugging_face_and_a_float64_loop():
    """Independent references for the off-by-one: HF's ``sliding_window_causal_mask_function``
    (kv_idx > q_idx - window, kv_idx <= q_idx), and a loop over each query's keys."""
    window = 4
    q, k, v = _inputs(2)
    got = attend(q.float(), k.float(), v.float(), window=window).double()

    masking_utils = pytest.importorskip("transformers.masking_utils")
    hf_mask_fn = masking_utils.sliding_window_causal_mask_function(window)
    hf_mask = torch.tensor([[bool(hf_mask_fn(*map(torch.tensor, (0, 0, i, j)))) for j in range(S)] for i in range(S)])
    assert hf_mask.sum(-1).tolist() == [min(i + 1, window) for i in range(S)]  # w keys, self included
    torch.testing.assert_close(got, reference(q, k, v, hf_mask), atol=FP32_BOUND, rtol=0)

    loop = torch.zeros(B, N_H, S, H_D, dtype=torch.float64)
    for b in range(B):
        for h in range(N_H):
            for i in range(S):
                keys = range(max(0, i - window + 1), i + 1)
                scores = [float(q[b, h, i] @ k[b, h // 2, j]) / math.sqrt(H_D) for j in keys]
                top = max(scores)
                weights = [math.exp(x - top) for x in scores]
                for w_j, j in zip(weights, keys):
                    loop[b, h, i] += w_j / sum(weights) * v[b, h // 2, j]
    torch.testing.assert_close(got, loop, atol=FP32_BOUND, rtol=0)


# FlexAttention has no backward on CPU: its gradients need a CUDA run.
@pytest.mark.parametrize("kernel", ["banded_blocks_of_3", "documents"])
def test_gradients_match_the_eager_reference(kernel):
    """Backward through window + soft-cap + scale, against eager_attention in float64. The
    backward forms the same products again and sums over at most s_kv keys for dq (and s
    queries for dk, dv), each with the forward's error: s * bound."""
    scale, softcap, window = CASES["all"]
    q, k, v = (t.float().requires_grad_() for t in _inputs(2))
    weight = torch.cos(torch.arange(B * N_H * S * H_D, dtype=torch.float64) * 0.29).view(B, N_H, S, H_D)
    if kernel == "documents":
        docs = Documents.from_seq_lens(torch.tensor([[4, 7], [11, 0]]), S)
        out = attend(q, k, v, documents=docs, scale=scale, softcap=softcap, window=window)
        ref_fn = lambda q, k, v: _doc_reference(q, k, v, docs.lengths, scale, softcap, window)  # noqa: E731
    else:
        out = _kernel(kernel)(q, k, v, scale=scale, softcap=softcap, window=window)
        ref_fn = lambda q, k, v: reference(q, k, v, allowed(range(S), S, window), scale, softcap)  # noqa: E731
    grads = torch.autograd.grad((out.double() * weight).sum(), (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref_grads = torch.autograd.grad((ref_fn(q64, k64, v64) * weight).sum(), (q64, k64, v64))
    for name, g, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g.double(), r, atol=S * FP32_BOUND, rtol=0, msg=name)


@pytest.mark.parametrize("softcap", [None, 2.0], ids=["sdpa_blocks", "eager_blocks"])
def test_dropout_is_applied_on_the_banded_path(softcap):
    q, k, v = (t.float() for t in _inputs(2))
    out = attend(q, k, v, window=3, softcap=softcap, dropout_p=1.0)
    assert torch.equal(out, torch.zeros_like(out))


def test_default_path_is_one_causal_sdpa_call(monkeypatch):
    """No window (or one as long as the row) and no soft-cap: today's single SDPA call."""
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = (t.float() for t in _inputs(2))
    attend(q, k, v)
    attend(q, k, v, window=S, scale=0.5)
    assert [(c["is_causal"], c["attn_mask"], c["scale"]) for c in calls] == [(True, None, None), (True, None, 0.5)]


class _LargestTensor(TorchDispatchMode):
    """Records the most elements any operation produced."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_window_costs_s_times_w_not_s_squared(softcap):
    """S = 4096, w = 32: no tensor beyond one query block's scores (block x (block + w))."""
    s, w, n_h = 4096, 32, 2
    q = torch.randn(1, n_h, s, H_D)
    k, v = torch.randn(1, 1, s, H_D), torch.randn(1, 1, s, H_D)
    with _LargestTensor() as probe:
        attend(q, k, v, window=w, softcap=softcap)
    block = max(w, kernels.QUERY_BLOCK)
    assert probe.largest <= max(n_h * block * (block + w), n_h * s * H_D)
    assert probe.largest < s * s // 16


def _mha(window, softcap=None, scale=None, max_seq_len=16):
    attn = MultiHeadAttention(
        embed_dim=16, num_heads=N_H, num_kv_heads=2, head_dim=H_D,
        q_proj=nn.Linear(16, N_H * H_D, bias=False), k_proj=nn.Linear(16, 2 * H_D, bias=False),
        v_proj=nn.Linear(16, 2 * H_D, bias=False), output_proj=nn.Linear(N_H * H_D, 16, bias=False),
        pos_embeddings=RotaryPositionalEmbeddings(H_D, max_seq_len), max_seq_len=max_seq_len,
        scale=scale, softcap=softcap, sliding_window=window,
    )
    with torch.no_grad():
        for i, p in enumerate(attn.parameters()):
            p.copy_(torch.sin(torch.arange(p.numel()).view(p.shape) * (0.37 + i)) * 0.5)
    return attn.eval()


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_kv_cache_decoding_across_the_window_equals_a_full_forward(softcap):
    """Prefill 3 tokens, then decode one at a time to 12 with a window of 4: every step
    equals the same positions of one forward over all 12 tokens."""
    attn = _mha(window=4, softcap=softcap, scale=0.3)
    x = torch.cos(torch.arange(B * 12 * 16, dtype=torch.float32).view(B, 12, 16) * 0.11)
    with torch.no_grad():
        full = attn(x)
        attn.setup_cache(batch_size=B, dtype=torch.float32)
        causal = torch.ones(16, 16, dtype=torch.bool).tril()
        steps, start = [], 0
        for stop in [3] + list(range(4, 13)):
            pos = torch.arange(start, stop)
            steps.append(attn(x[:, start:stop], mask=causal[pos].expand(B, -1, -1), input_pos=pos))
            start = stop
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    # and the window is really there: without it the late positions differ
    assert not torch.allclose(_mha(window=None, softcap=softcap, scale=0.3)(x)[:, 5:], full[:, 5:], atol=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 0}, r"sliding_window \(0\) must be an int >= 1"),
    ({"window": 2.5}, r"sliding_window \(2.5\) must be an int >= 1"),
    ({"window": None, "softcap": 0.0}, r"softcap \(0.0\) must be > 0"),
    ({"window": None, "scale": -1.0}, r"scale \(-1.0\) must be > 0"),
])
def test_out_of_range_options_are_user_errors(kwargs, message):
    with pytest.raises(UserValueError, match=message):
        _mha(**kwargs)


def test_documents_equal_their_dense_block_causal_mask_with_a_window():
    """A compiled decoder hands packed rows over as the dense block-causal mask instead of
    documents: the window (on row indices) must then equal the per-document one."""
    attn = _mha(window=3, softcap=2.0)
    seq_lens = torch.tensor([[5, 6, 1], [12, 0, 0]])
    x = torch.cos(torch.arange(B * 12 * 16, dtype=torch.float32).view(B, 12, 16) * 0.17)
    pos = torch.stack([torch.cat([torch.arange(n) for n in row if n]) for row in seq_lens.tolist()])
    with torch.no_grad():
        by_documents = attn(x, input_pos=pos, documents=Documents.from_seq_lens(seq_lens, 12))
        by_mask = attn(x, input_pos=pos, mask=block_causal_from_seq_lens(seq_lens, 12))
    torch.testing.assert_close(by_documents, by_mask, atol=1e-5, rtol=0)
