"""Bad input fails with one clear line naming the file, column or row, before training."""

import json
import re
from pathlib import Path

import pytest

from torchtune import UserFileNotFoundError, UserValueError
from torchtune.datasets import (
    alpaca_dataset,
    chat_dataset,
    instruct_dataset,
    PackedDataset,
    text_completion_dataset,
)
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
    with pytest.raises(UserValueError, match=r"^row 2: column 'output' is missing$"):
        _alpaca(tok, tmp_path, _json(tmp_path, records))


def test_non_text_value_names_row_and_column(tok, tmp_path):
    records = [GOOD, {"instruction": "Add.", "input": "1, 2", "output": 3}]
    with pytest.raises(UserValueError, match=r"row 1: column 'output' is of type int, not text$"):
        _alpaca(tok, tmp_path, _json(tmp_path, records))


def test_missing_file(tok, tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(UserFileNotFoundError, match=r"dataset file not found: .*nope\.json"):
        _alpaca(tok, tmp_path, missing)


def test_empty_file_and_empty_dataset(tok, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(UserValueError, match=r"dataset file is empty: .*empty\.json"):
        _alpaca(tok, tmp_path, str(empty))
    none = _json(tmp_path, [], "none.json")
    with pytest.raises(UserValueError) as info:
        _alpaca(tok, tmp_path, none)
    # datasets' own words were 'Instruction "train" corresponds to no data!'
    assert str(info.value) == f"dataset 'json' (data_files='{none}') has no rows in split 'train'"


@pytest.mark.parametrize("data_files, key", [
    ([], "data_files"),  # datasets: "Empty 'data_files': '[]'. It should be either ..."
    ({"train": []}, "data_files['train']"),  # datasets: a bare StopIteration traceback
    ({}, "data_files"),
])
def test_empty_data_files_names_the_key(tok, tmp_path, data_files, key):
    with pytest.raises(UserValueError) as info:
        _alpaca(tok, tmp_path, data_files)
    assert str(info.value) == f"dataset 'json': {key} is empty; name at least one file"
    with pytest.raises(UserValueError, match=rf"^dataset 'json': {re.escape(key)} is empty"):
        instruct_dataset(tok, source="json", data_files=data_files, cache_dir=str(tmp_path / "cache"))


def test_dataset_lacking_a_column(tok, tmp_path):
    records = [{"instruction": "a", "input": "", "answer": "b"}]
    msg = r"dataset 'json' has no column 'output' \(its columns: "
    with pytest.raises(UserValueError, match=msg):
        _alpaca(tok, tmp_path, _json(tmp_path, records))


def test_column_map_naming_an_absent_column(tok, tmp_path):
    path = _json(tmp_path, [{"question": "a", "answer": "b"}])
    with pytest.raises(UserValueError, match=r"no column 'prompt'"):
        instruct_dataset(
            tok, "json", "torchtune.data.AlpacaInstructTemplate",
            column_map={"instruction": "prompt", "output": "answer"},
            data_files=path, cache_dir=str(tmp_path / "cache"),
        )
    msg = r"column_map maps 'input' to 'context', but .* no such column"
    with pytest.raises(UserValueError, match=msg):
        instruct_dataset(
            tok, "json", "torchtune.data.AlpacaInstructTemplate",
            column_map={"instruction": "question", "input": "context", "output": "answer"},
            data_files=path, cache_dir=str(tmp_path / "cache"),
        )
    msg = r"column_map key 'prompt' is not a column AlpacaInstructTemplate uses"
    with pytest.raises(UserValueError, match=msg):
        instruct_dataset(
            tok, "json", "torchtune.data.AlpacaInstructTemplate", column_map={"prompt": "question"},
            data_files=path, cache_dir=str(tmp_path / "cache"),
        )


def test_bad_template_path(tok, tmp_path):
    msg = r"template 'torchtune.data.NoSuchTemplate' is not an importable dotted path"
    with pytest.raises(UserValueError, match=msg):
        instruct_dataset(tok, "json", "torchtune.data.NoSuchTemplate", data_files="x.json")


def test_packed_needs_max_seq_len(tok):
    with pytest.raises(UserValueError, match="packed=True needs max_seq_len"):
        text_completion_dataset(tok, "text", packed=True, data_files="x.txt")


def test_user_errors_are_still_builtin_errors():
    assert issubclass(UserValueError, ValueError)
    assert issubclass(UserFileNotFoundError, FileNotFoundError)


def test_chat_and_packing_settings(tok, tmp_path):
    path = _json(tmp_path, [{"conversations": []}])
    with pytest.raises(UserValueError, match="packed=True needs max_seq_len"):
        chat_dataset(tok, "json", packed=True, data_files=path)
    with pytest.raises(UserValueError, match="conversation_style 'xml' is not one of"):
        chat_dataset(tok, "json", conversation_style="xml", data_files=path)
    with pytest.raises(UserValueError, match="chat_format 'no.such.Format' is not an importable"):
        chat_dataset(tok, "json", chat_format="no.such.Format", data_files=path)
    items = [{"tokens": [1, 2, 3], "labels": [1, 2, 3]}]
    with pytest.raises(UserValueError, match="max_seq_len must be positive, got 0"):
        PackedDataset(items, max_seq_len=0)
    with pytest.raises(UserValueError, match="sample 0 has 3 tokens, more than max_seq_len=2"):
        PackedDataset(items, max_seq_len=2)


# A file the parser rejects: the one-line error names the file and gives the parser's own
# account of where and what (datasets alone says "An error occurred while generating the
# dataset").
def test_malformed_json_names_the_line(tok, tmp_path):
    path = tmp_path / "data.json"
    path.write_text(
        '[{"instruction": "a", "input": "", "output": "b"},\n'
        ' {"instruction": "c", "input": "", "output": "d"},\n'
        ' {"instruction": "e", "input": "", "output": "f",,}]\n'
    )
    with pytest.raises(UserValueError) as info:
        _alpaca(tok, tmp_path, str(path))
    message = str(info.value)
    assert message.startswith(f"cannot load dataset 'json' (data_files='{path}'): ")
    where = rf"at position \d+ \(line 3 of {re.escape(str(path))}\)$"
    assert re.search(r"Expected object or value " + where, message)
    assert "\n" not in message


def test_malformed_json_lines_names_the_line(tok, tmp_path):
    # pyarrow says "in row 2": counted from 0, without blank lines, and from the start of
    # the block it was parsing (a few hundred KiB), not of the file.
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"instruction": "a", "input": "", "output": "b"}\n'
        '{"instruction": "c", "input": "", "output": "d"}\n'
        '{"instruction": "e", "input": "", "output": "f"\n'
        '{"instruction": "g", "input": "", "output": "h"}\n'
    )
    with pytest.raises(UserValueError) as info:
        _alpaca(tok, tmp_path, str(path))
    assert str(info.value) == (
        f"cannot load dataset 'json' (data_files='{path}'): JSON parse error: "
        f"Missing a comma or '}}' after an object member. (line 3 of {path})"
    )

    # Past a blank line and the first block of the file; the second of two files.
    good = json.dumps(dict(GOOD, instruction="x" * 100)) + "\n"
    first = tmp_path / "first.jsonl"
    first.write_text(good * 3)
    second = tmp_path / "second.jsonl"
    second.write_text(good + "\n" + good * 5000 + '{"instruction": "a" "input": ""}\n' + good)
    with pytest.raises(UserValueError, match=rf"after an object member\. \(line 5003 of {re.escape(str(second))}\)$"):
        _alpaca(tok, tmp_path, [str(first), str(second)])


def test_malformed_csv_names_the_line(tok, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("instruction,input,output\na,,b\nc,,d,extra\ne,,f\n")
    msg = (
        r"^cannot load dataset 'csv' \(data_files='.*data\.csv'\): Error tokenizing data\. "
        r"C error: Expected 3 fields in line 3, saw 4$"
    )
    with pytest.raises(UserValueError, match=msg):
        alpaca_dataset(tok, source="csv", data_files=str(path),
                       cache_dir=str(tmp_path / "cache"))
