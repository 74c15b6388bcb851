"""TransformerDecoder: KV-cache decoding and packed sequences (mask + input_pos)."""

import pytest
import torch

from torchtune.models.llama2 import llama2

VOCAB = 50


def tiny_model(num_kv_heads: int = 2, max_seq_len: int = 32):
    model = llama2(vocab_size=VOCAB, num_layers=2, num_heads=4, num_kv_heads=num_kv_heads,
                   embed_dim=32, max_seq_len=max_seq_len, intermediate_dim=64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("scale") else 0.2 * noise)
    return model.eval()


def fixed_tokens(b: int, s: int) -> torch.Tensor:
    return (torch.arange(b * s).view(b, s) * 11 + 5) % VOCAB


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_kv_cache_decoding_equals_full_forward(num_kv_heads, assert_decoding_equals_full_forward):
    model = tiny_model(num_kv_heads)
    tokens = fixed_tokens(2, 20)
    assert_decoding_equals_full_forward(model, tokens, prefill=8)
    with torch.no_grad():
        full = model(tokens)
        state_keys = set(model.state_dict())
        model.setup_caches(batch_size=2, dtype=torch.float32)
        assert model.caches_are_enabled()
        assert set(model.state_dict()) == state_keys  # caches never reach a checkpoint
        prefill = model(tokens[:, :8], input_pos=torch.arange(8).expand(2, -1))
        model(tokens[:, 8:9], input_pos=torch.tensor([[8], [8]]))
        model.reset_caches()
        assert all(not layer.attn.kv_cache.k_cache.any() for layer in model.layers)
        # After a reset, decoding starts over: the same prefill gives the same logits, bit
        # for bit (the same computation on an empty cache).
        again = model(tokens[:, :8], input_pos=torch.arange(8).expand(2, -1))
        torch.testing.assert_close(again, prefill, atol=0, rtol=0)
        model.teardown_caches()
        assert not model.caches_are_enabled()
        torch.testing.assert_close(model(tokens), full, atol=0, rtol=0)


def test_reset_caches_requires_setup():
    with pytest.raises(RuntimeError, match="before setup_caches"):
        tiny_model().reset_caches()


def test_cache_batch_size_mismatch_is_reported():
    model = tiny_model()
    model.setup_caches(batch_size=2, dtype=torch.float32)
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        model(fixed_tokens(3, 4))


def block_causal(seq_lens, s):
    mask = torch.zeros(s, s, dtype=torch.bool)
    start = 0
    for n in seq_lens:
        mask[start : start + n, start : start + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        start += n
    return mask


def test_packed_documents_match_separate_runs():
    model = tiny_model()
    docs = [[3, 9, 4, 1, 7], [12, 8, 30], [2, 2, 40, 41, 42, 43, 5, 6]]  # 16 tokens in a row
    seq_lens = [len(d) for d in docs]
    tokens = torch.tensor([sum(docs, [])])
    input_pos = torch.tensor([sum((list(range(n)) for n in seq_lens), [])])
    mask = block_causal(seq_lens, tokens.shape[1])[None]
    with torch.no_grad():
        packed = model(tokens, mask=mask, input_pos=input_pos)
        by_lengths = model(tokens, input_pos=input_pos, seq_lens=torch.tensor([seq_lens]))
        # Without the mask/positions documents leak into each other: the check has teeth.
        leaky = model(tokens)
        start = 0
        for doc in docs:
            alone = model(torch.tensor([doc]))
            got = packed[:, start : start + len(doc)]
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=0)
            torch.testing.assert_close(by_lengths[:, start : start + len(doc)], alone, atol=1e-5, rtol=0)
            if start:
                assert (leaky[:, start : start + len(doc)] - alone).abs().max() > 1e-3
            start += len(doc)


def test_mask_batch_rows_are_independent():
    model = tiny_model()
    tokens = fixed_tokens(2, 6)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    mask = torch.stack([causal, block_causal([3, 3], 6)])
    pos = torch.tensor([list(range(6)), [0, 1, 2, 0, 1, 2]])
    with torch.no_grad():
        out = model(tokens, mask=mask, input_pos=pos)
        torch.testing.assert_close(out[:1], model(tokens[:1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[1:, 3:], model(tokens[1:, 3:]), atol=1e-5, rtol=0)


# --- tied output projection -------------------------------------------------------------------


def test_tied_linear_shares_the_embedding_weight():
    import copy

    from torchtune.modules import TiedLinear

    emb = torch.nn.Embedding(VOCAB, 8)
    tied = TiedLinear(emb)
    assert tied.weight is emb.weight
    assert list(tied.parameters()) == [] and tied.state_dict() == {}
    x = torch.randn(3, 8)
    torch.testing.assert_close(tied(x), x @ emb.weight.t(), atol=0, rtol=0)

    holder = torch.nn.Module()
    holder.emb, holder.out = emb, tied
    assert list(holder.state_dict()) == ["emb.weight"]  # no second copy of the weight
    # A deep copy stays tied to its own copy of the embedding, not to the original.
    clone = copy.deepcopy(holder)
    assert clone.out.weight is clone.emb.weight and clone.emb.weight is not emb.weight
    # to_empty replaces the embedding's parameter; the projection follows it.
    with torch.device("meta"):
        meta = torch.nn.Module()
        meta.emb = torch.nn.Embedding(VOCAB, 8)
        meta.out = TiedLinear(meta.emb)
    meta.to_empty(device="cpu")
    assert meta.out.weight is meta.emb.weight and meta.emb.weight.device.type == "cpu"
