"""Llama 2 logits against HF transformers and against an independent Meta-style reference.

Both references get the same random weights as our model, carried over by our own converter
(``tune_to_hf`` / ``tune_to_meta``); tolerance 1e-5 absolute in fp32 on CPU.
"""

import pytest
import torch

from reference_llama2 import Transformer as ReferenceLlama2  # this folder is on sys.path
from torchtune.models.llama2 import llama2
from torchtune.models.llama2._convert_weights import hf_to_tune, tune_to_hf, tune_to_meta

ATOL = 1e-5
VOCAB, DIM, LAYERS, HIDDEN, MAX_SEQ_LEN = 64, 32, 2, 96, 64
CONFIGS = [pytest.param(4, 4, id="mha"), pytest.param(4, 2, id="gqa"), pytest.param(4, 1, id="mqa")]


def random_init_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter deterministically; norm scales around 1, weights with std 0.2."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("scale") else 0.2 * noise)
    return model.eval()


def tiny_llama2(num_heads: int, num_kv_heads: int):
    model = llama2(
        vocab_size=VOCAB,
        num_layers=LAYERS,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        embed_dim=DIM,
        max_seq_len=MAX_SEQ_LEN,
        intermediate_dim=HIDDEN,
    )
    return random_init_(model)


def tokens_for(seq_len: int, batch: int = 2) -> torch.Tensor:
    return (torch.arange(batch * seq_len).view(batch, seq_len) * 7 + 3) % VOCAB


@pytest.mark.parametrize("num_heads,num_kv_heads", CONFIGS)
def test_matches_hf_llama(num_heads, num_kv_heads):
    transformers = pytest.importorskip("transformers")
    model = tiny_llama2(num_heads, num_kv_heads)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=MAX_SEQ_LEN,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    hf_model = transformers.LlamaForCausalLM(config).eval()
    hf_sd = tune_to_hf(model.state_dict(), num_heads, num_kv_heads, DIM)
    hf_model.load_state_dict(hf_sd, strict=True)
    # The converter round trip is exact (a permutation), so the key map cannot hide an error.
    back = hf_to_tune(hf_model.state_dict(), num_heads, num_kv_heads, DIM)
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())

    for seq_len in (1, 7, 33, MAX_SEQ_LEN):
        tokens = tokens_for(seq_len)
        with torch.no_grad():
            ours = model(tokens)
            theirs = hf_model(input_ids=tokens).logits
        assert ours.shape == (2, seq_len, VOCAB)
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        assert ours.std() > 0.5  # logits are not trivially small


@pytest.mark.parametrize("num_heads,num_kv_heads", CONFIGS)
def test_matches_meta_reference(num_heads, num_kv_heads):
    model = tiny_llama2(num_heads, num_kv_heads)
    ref = ReferenceLlama2(VOCAB, LAYERS, DIM, num_heads, num_kv_heads, HIDDEN, MAX_SEQ_LEN).eval()
    ref.load_state_dict(tune_to_meta(model.state_dict()), strict=True)
    for seq_len in (1, 5, 32, MAX_SEQ_LEN):
        tokens = tokens_for(seq_len)
        with torch.no_grad():
            torch.testing.assert_close(model(tokens), ref(tokens), atol=ATOL, rtol=0)


def test_reference_is_sensitive_to_rope_layout():
    """The reference check has teeth: HF's rotate-half q/k rows loaded as-is must fail."""
    model = tiny_llama2(4, 2)
    ref = ReferenceLlama2(VOCAB, LAYERS, DIM, 4, 2, HIDDEN, MAX_SEQ_LEN).eval()
    wrong = tune_to_hf(model.state_dict(), 4, 2, DIM)
    wrong = {k: wrong[k2] for k, k2 in zip(model.state_dict(), wrong)}  # HF rows, our names
    ref.load_state_dict(tune_to_meta(wrong), strict=True)
    tokens = tokens_for(16)
    with torch.no_grad():
        assert (model(tokens) - ref(tokens)).abs().max() > 1e-2
