"""Bad input fails with one clear line naming the file, column or row, before training."""

import json
from pathlib import Path

import pytest

from torchtune.datasets import alpaca_dataset, instruct_dataset, text_completion_dataset
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
GOOD = {"instruction": "Name a color.", "input": "", "output": "Blue."}


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")


def _json(tmp_path, records, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return str(path)


def _alpaca(tok, tmp_path, data_files, **kwargs):
    return alpaca_dataset(
        tok, source="json", data_files=data_files, cache_dir=str(tmp_path / "cache"), **kwargs
    )


def test_record_missing_a_column_names_row_and_column(tok, tmp_path):
    records = [GOOD, GOOD, {"instruction": "Name a fruit.", "input": ""}, GOOD]
    with pytest.raises(ValueError, match=r"^row 2: column 'output' is missing$"):
        _alpaca(tok, tmp_path, _json(tmp_path, records))


def test_non_text_value_names_row_and_column(tok, tmp_path):
    records = [GOOD, {"instruction": "Add.", "input": "1, 2", "output": 3}]
    with pytest.raises(ValueError, match=r"row 1: column 'output' is of type int, not text$"):
        _alpaca(tok, tmp_path, _json(tmp_path, records))


def test_missing_file(tok, tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=r"dataset file not found: .*nope\.json"):
        _alpaca(tok, tmp_path, missing)


def test_empty_file_and_empty_dataset(tok, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"dataset file is empty: .*empty\.json"):
        _alpaca(tok, tmp_path, str(empty))
    with pytest.raises(ValueError, match=r"'json' \(data_files=.*none\.json.*\)"):
        _alpaca(tok, tmp_path, _json(tmp_path, [], "none.json"))


def test_dataset_lacking_a_column(tok, tmp_path):
    records = [{"instruction": "a", "input": "", "answer": "b"}]
    with pytest.raises(ValueError, match=r"dataset 'json' has no column 'output' \(its columns: "):
        _alpaca(tok, tmp_path, _json(tmp_path, records))


def test_column_map_naming_an_absent_column(tok, tmp_path):
    path = _json(tmp_path, [{"question": "a", "answer": "b"}])
    with pytest.raises(ValueError, match=r"no column 'prompt'"):
        instruct_dataset(
            tok, "json", "torchtune.data.AlpacaInstructTemplate",
            column_map={"instruction": "prompt", "output": "answer"},
            data_files=path, cache_dir=str(tmp_path / "cache"),
        )
    msg = r"column_map maps 'input' to 'context', but .* no such column"
    with pytest.raises(ValueError, match=msg):
        instruct_dataset(
            tok, "json", "torchtune.data.AlpacaInstructTemplate",
            column_map={"instruction": "question", "input": "context", "output": "answer"},
            data_files=path, cache_dir=str(tmp_path / "cache"),
        )
    msg = r"column_map key 'prompt' is not a column AlpacaInstructTemplate uses"
    with pytest.raises(ValueError, match=msg):
        instruct_dataset(
            tok, "json", "torchtune.data.AlpacaInstructTemplate", column_map={"prompt": "question"},
            data_files=path, cache_dir=str(tmp_path / "cache"),
        )


def test_bad_template_path(tok, tmp_path):
    msg = r"template 'torchtune.data.NoSuchTemplate' is not an importable dotted path"
    with pytest.raises(ValueError, match=msg):
        instruct_dataset(tok, "json", "torchtune.data.NoSuchTemplate", data_files="x.json")


def test_packed_needs_max_seq_len(tok):
    with pytest.raises(ValueError, match="packed=True needs max_seq_len"):
        text_completion_dataset(tok, "text", packed=True, data_files="x.txt")
