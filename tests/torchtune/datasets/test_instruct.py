import json
from pathlib import Path

import pytest

from torchtune.data import AlpacaInstructTemplate
from torchtune.datasets import alpaca_dataset, instruct_dataset
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")


def test_column_map_renames_columns(tok, tmp_path):
    """Alpaca's first 50 records under other column names give the same samples."""
    records = json.loads((ASSETS / "alpaca_1000.json").read_text())[:50]
    original = tmp_path / "original.json"
    original.write_text(json.dumps(records))
    renamed = tmp_path / "renamed.json"
    renamed.write_text(
        json.dumps([{"q": r["instruction"], "ctx": r["input"], "a": r["output"]} for r in records])
    )
    cache = str(tmp_path / "cache")
    expected = alpaca_dataset(tok, source="json", data_files=str(original), cache_dir=cache,
                              train_on_input=False)
    for template in (AlpacaInstructTemplate, "torchtune.data.AlpacaInstructTemplate"):
        ds = instruct_dataset(
            tok, "json", template,
            column_map={"instruction": "q", "input": "ctx", "output": "a"},
            train_on_input=False, max_seq_len=512, data_files=str(renamed), cache_dir=cache,
        )
        assert [ds[i] for i in range(50)] == [expected[i] for i in range(50)]


def test_optional_input_column_may_be_absent(tok, tmp_path):
    path = tmp_path / "no_input.json"
    record = {"instruction": "Name a major American city", "output": "New York City."}
    path.write_text(json.dumps([record]))
    ds = instruct_dataset(tok, "json", AlpacaInstructTemplate, data_files=str(path),
                          cache_dir=str(tmp_path / "cache"))
    prompt = AlpacaInstructTemplate.format({"instruction": "Name a major American city"})
    assert ds[0]["tokens"] == tok.encode(prompt + "New York City.")
    assert ds[0]["labels"] == ds[0]["tokens"]  # train_on_input defaults to True
