"""Alpaca on real records (tests/assets/alpaca_1000.json) with the Llama 2 tokenizer.

The expected ids below were produced with sentencepiece 0.2.3 directly, independently of
torchtune: for a record r, ``[1] + sp.encode(prompt + r["output"]) + [2]`` with
``sp = SentencePieceProcessor(model_file="tests/assets/llama2_tokenizer.model")`` and
``prompt`` the Alpaca prompt text (see test_templates.py), split after
``1 + len(sp.encode(prompt))`` ids into PROMPT and RESPONSE.
``test_literals_are_the_whole_text_encoding`` re-derives them the same way.
"""

import json
import logging
from pathlib import Path

import pytest
import sentencepiece

from torchtune.data import AlpacaInstructTemplate
from torchtune.datasets import alpaca_cleaned_dataset, alpaca_dataset, PackedDataset
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
ALPACA = ASSETS / "alpaca_1000.json"
IGN = -100

# Record 745: {"instruction": "Calculate the perimeter of a square",
#              "input": "Side length 10", "output": "40"}
PROMPT_745 = [
    1, 13866, 338, 385, 15278, 393, 16612, 263, 3414, 29892, 3300, 2859, 411, 385, 1881, 393,
    8128, 4340, 3030, 29889, 14350, 263, 2933, 393, 7128, 2486, 1614, 2167, 278, 2009, 29889,
    13, 13, 2277, 29937, 2799, 4080, 29901, 13, 27065, 403, 278, 639, 14772, 310, 263, 6862,
    13, 13, 2277, 29937, 10567, 29901, 13, 23908, 3309, 29871, 29896, 29900, 13, 13, 2277,
    29937, 13291, 29901, 13,
]
RESPONSE_745 = [29946, 29900, 2]  # "40" </s>
# Record 30: {"instruction": "Name a major American city", "input": "",
#             "output": "New York City."}
PROMPT_30 = [
    1, 13866, 338, 385, 15278, 393, 16612, 263, 3414, 29889, 14350, 263, 2933, 393, 7128, 2486,
    1614, 2167, 278, 2009, 29889, 13, 13, 2277, 29937, 2799, 4080, 29901, 13, 1170, 263, 4655,
    3082, 4272, 13, 13, 2277, 29937, 13291, 29901, 13,
]
RESPONSE_30 = [4373, 3088, 4412, 29889, 2]  # "New York City." </s>


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def two_records(tmp_path_factory):
    records = json.loads(ALPACA.read_text())
    path = tmp_path_factory.mktemp("data") / "two.json"
    path.write_text(json.dumps([records[745], records[30]]))
    return str(path)


def _build(tok, cache_dir, data_files=str(ALPACA), **kwargs):
    return alpaca_dataset(tok, source="json", data_files=data_files, cache_dir=cache_dir, **kwargs)


def test_literals_are_the_whole_text_encoding():
    sp = sentencepiece.SentencePieceProcessor(model_file=str(ASSETS / "llama2_tokenizer.model"))
    records = json.loads(ALPACA.read_text())
    cases = [(745, PROMPT_745, RESPONSE_745), (30, PROMPT_30, RESPONSE_30)]
    for i, prompt_ids, response_ids in cases:
        prompt = AlpacaInstructTemplate.format(records[i])
        assert [1] + sp.encode(prompt + records[i]["output"]) + [2] == prompt_ids + response_ids
        assert len(prompt_ids) == 1 + len(sp.encode(prompt))


@pytest.mark.parametrize("train_on_input", [True, False])
def test_unpacked_samples(tok, cache_dir, train_on_input):
    ds = _build(tok, cache_dir, train_on_input=train_on_input)
    assert len(ds) == 1000
    for i, prompt, response in [(745, PROMPT_745, RESPONSE_745), (30, PROMPT_30, RESPONSE_30)]:
        item = ds[i]
        assert set(item) == {"tokens", "labels"}
        assert item["tokens"] == prompt + response
        expected_prompt_labels = prompt if train_on_input else [IGN] * len(prompt)
        assert item["labels"] == expected_prompt_labels + response


@pytest.mark.parametrize("train_on_input", [True, False])
def test_packed_row(tok, cache_dir, two_records, train_on_input):
    ds = _build(
        tok, cache_dir, two_records, train_on_input=train_on_input, max_seq_len=128, packed=True
    )
    assert isinstance(ds, PackedDataset) and len(ds) == 1
    row = ds[0]
    n1, n2 = len(PROMPT_745) + 3, len(PROMPT_30) + 5  # 69 and 46 tokens
    pad = 128 - n1 - n2
    assert row["tokens"] == PROMPT_745 + RESPONSE_745 + PROMPT_30 + RESPONSE_30 + [0] * pad
    if train_on_input:
        # each document's first label (its BOS) is ignored so no target crosses documents
        labels = [IGN] + PROMPT_745[1:] + RESPONSE_745 + [IGN] + PROMPT_30[1:] + RESPONSE_30
    else:
        labels = [IGN] * len(PROMPT_745) + RESPONSE_745 + [IGN] * len(PROMPT_30) + RESPONSE_30
    assert row["labels"] == labels + [IGN] * pad
    assert row["input_pos"] == list(range(n1)) + list(range(n2)) + list(range(pad))
    assert row["seq_lens"] == [n1, n2, pad]


@pytest.mark.parametrize("train_on_input", [True, False])
def test_truncation_keeps_eos_and_alignment(tok, cache_dir, two_records, train_on_input, caplog):
    with caplog.at_level(logging.INFO):
        ds = _build(tok, cache_dir, two_records, train_on_input=train_on_input, max_seq_len=64)
    # record 745 has 69 tokens: cut to 64, EOS replaces the 64th and is not learned
    assert ds[0]["tokens"] == PROMPT_745[:63] + [2]
    assert ds[0]["labels"] == (PROMPT_745[:63] if train_on_input else [IGN] * 63) + [IGN]
    assert ds[1]["tokens"] == PROMPT_30 + RESPONSE_30  # 46 tokens: untouched
    assert "truncated 1 of 2 samples to max_seq_len=64" in caplog.text


def test_packing_the_1000_records_keeps_every_sample(tok, cache_dir):
    unpacked = _build(tok, cache_dir, train_on_input=False)
    packed = _build(tok, cache_dir, train_on_input=False, packed=True)
    lengths = [len(unpacked[i]["tokens"]) for i in range(len(unpacked))]
    i = 0  # next unpacked sample expected
    for r in range(len(packed)):
        row = packed[r]
        assert len(row["tokens"]) == len(row["labels"]) == len(row["input_pos"]) == 512
        assert sum(row["seq_lens"]) == 512
        start = 0
        for k, n in enumerate(row["seq_lens"]):
            assert row["input_pos"][start : start + n] == list(range(n))
            assert row["labels"][start] == IGN
            tokens, labels = row["tokens"][start : start + n], row["labels"][start : start + n]
            if i < len(lengths) and n == lengths[i] and tokens == unpacked[i]["tokens"]:
                assert labels[1:] == unpacked[i]["labels"][1:]
                i += 1
            else:  # only the row's tail may be padding, and only if the next sample didn't fit
                assert k == len(row["seq_lens"]) - 1
                assert tokens == [0] * n and labels == [IGN] * n
                assert i == len(lengths) or lengths[i] > n
            start += n
    assert i == 1000  # every sample, in order, none dropped


def test_cache_is_reused(tok, cache_dir, two_records):
    first = _build(tok, cache_dir, two_records).hf_dataset.cache_files
    second = _build(tok, cache_dir, two_records).hf_dataset.cache_files
    assert first == second  # same fingerprint: the second build loaded the first's cache
    other_tok = SentencePieceTokenizer(ASSETS / "tok512.model")
    assert _build(other_tok, cache_dir, two_records).hf_dataset.cache_files != first


def test_num_proc_2_gives_the_same_items(tok, cache_dir, tmp_path):
    one = _build(tok, cache_dir, max_seq_len=256)
    two = _build(tok, str(tmp_path), max_seq_len=256, num_proc=2)  # fresh cache: really runs
    shards = [Path(f["filename"]).name for f in two.hf_dataset.cache_files]
    assert len(shards) == 2 and all(s.endswith("_of_00002.arrow") for s in shards)
    assert len(one) == len(two) == 1000
    for i in range(0, 1000, 37):
        assert one[i] == two[i]


def test_alpaca_cleaned_reads_local_files(tok, cache_dir, two_records):
    ds = alpaca_cleaned_dataset(tok, source="json", data_files=two_records, cache_dir=cache_dir)
    assert ds[1]["tokens"] == PROMPT_30 + RESPONSE_30
