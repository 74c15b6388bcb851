"""Packing changes nothing the model learns: the per-token losses of a packed row equal
those of its samples run one by one (block-causal mask, positions restarting, each
document's first label ignored)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from torchtune.data import padded_collate
from torchtune.datasets import alpaca_dataset
from torchtune.models.llama2 import llama2
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
MAX_SEQ_LEN = 256


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = llama2(
        vocab_size=32000, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64,
        max_seq_len=MAX_SEQ_LEN,
    )
    # Random weights of a realistic scale so that attention is far from uniform and a
    # leak across documents would show.
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m.eval()


def _token_losses(logits, labels):
    """Per-target loss (unreduced), aligned so that entry i is the loss of labels[i + 1]."""
    return F.cross_entropy(logits[0, :-1], labels[0, 1:], reduction="none", ignore_index=-100)


@pytest.mark.parametrize("train_on_input", [True, False])
def test_packed_row_losses_equal_unpacked(model, tmp_path, train_on_input):
    tok = SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")
    kwargs = dict(source="json", data_files=str(ASSETS / "alpaca_1000.json"),
                  cache_dir=str(tmp_path), train_on_input=train_on_input, max_seq_len=MAX_SEQ_LEN)
    unpacked = alpaca_dataset(tok, **kwargs)
    packed = alpaca_dataset(tok, packed=True, **kwargs)
    checked_docs = 0
    sample = 0
    for r in range(3):
        batch = padded_collate([packed[r]])
        with torch.no_grad():
            logits = model(batch["tokens"], input_pos=batch["input_pos"], seq_lens=batch["seq_lens"])
        packed_losses = _token_losses(logits, batch["labels"])
        start = 0
        for n in packed[r]["seq_lens"]:
            if n != len(unpacked[sample]["tokens"]):
                break  # the padding at the end of the row
            single = padded_collate([unpacked[sample]])
            with torch.no_grad():
                ref = _token_losses(model(single["tokens"]), single["labels"])
            # positions start .. start+n-2 predict this document's labels 1 .. n-1
            got = packed_losses[start : start + n - 1]
            assert torch.equal(got == 0, ref == 0)  # same targets ignored
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
            # the boundary target (this document's first label) is ignored
            if start > 0:
                assert packed_losses[start - 1] == 0
            start += n
            sample += 1
            checked_docs += 1
        assert (packed_losses[start - 1 :] == 0).all()  # padding adds no loss
    assert checked_docs >= 6
    # and the losses really differ without seq_lens: attention would cross documents
    batch = padded_collate([packed[0]])
    with torch.no_grad():
        leaky = _token_losses(model(batch["tokens"]), batch["labels"])
        masked = _token_losses(
            model(batch["tokens"], input_pos=batch["input_pos"], seq_lens=batch["seq_lens"]),
            batch["labels"],
        )
    assert (leaky - masked).abs().max() > 1e-2
