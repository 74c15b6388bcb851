from pathlib import Path

import pytest

from torchtune.datasets import PackedDataset, text_completion_dataset
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
TEXT = ASSETS / "tinystories_sample_eot.txt"


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(ASSETS / "tok512.model")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def test_one_sample_per_line(tok, cache_dir):
    lines = TEXT.read_text().splitlines()
    ds = text_completion_dataset(tok, "text", data_files=str(TEXT), cache_dir=cache_dir)
    assert len(ds) == len(lines) == 25
    for i in (0, 1, 7):
        assert ds[i]["tokens"] == [1] + tok.encode(lines[i], add_bos=False, add_eos=False) + [2]
        assert ds[i]["labels"] == ds[i]["tokens"]


def test_whole_file_truncated_keeps_eos(tok, cache_dir, caplog):
    text = TEXT.read_text()
    full = [1] + tok.encode(text, add_bos=False, add_eos=False) + [2]
    ds = text_completion_dataset(
        tok, "text", data_files=str(TEXT), cache_dir=cache_dir, sample_by="document",
        max_seq_len=100,
    )
    assert len(ds) == 1 and len(full) > 100
    assert ds[0]["tokens"] == full[:99] + [2]
    assert ds[0]["labels"] == full[:99] + [-100]
    assert "truncated 1 of 1 samples to max_seq_len=100" in caplog.text
    no_eos = text_completion_dataset(
        tok, "text", data_files=str(TEXT), cache_dir=cache_dir, sample_by="document",
        max_seq_len=100, add_eos=False,
    )
    assert no_eos[0]["tokens"] == no_eos[0]["labels"] == full[:100]


def test_packed_splits_documents_across_rows(tok, cache_dir):
    unpacked = text_completion_dataset(tok, "text", data_files=str(TEXT), cache_dir=cache_dir)
    stream = [t for i in range(len(unpacked)) for t in unpacked[i]["tokens"]]
    ds = text_completion_dataset(
        tok, "text", data_files=str(TEXT), cache_dir=cache_dir, max_seq_len=64, packed=True
    )
    assert isinstance(ds, PackedDataset)
    assert len(ds) == -(-len(stream) // 64)
    rows = [ds[r] for r in range(len(ds))]
    # nothing truncated or dropped: the rows are the token stream, padded only at the end
    pad = 64 * len(rows) - len(stream)
    assert sum((row["tokens"] for row in rows), []) == stream + [0] * pad
    for row in rows:
        assert len(row["tokens"]) == 64 and sum(row["seq_lens"]) == 64
        assert row["labels"][0] == -100
