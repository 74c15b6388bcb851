"""Samples with nothing to learn: all of them stop the build, some of them are counted."""

import json
import logging
from pathlib import Path

import datasets
import pytest

from torchtune import UserValueError
from torchtune.datasets import alpaca_dataset, chat_dataset, text_completion_dataset
from torchtune.datasets._tokenized import count_samples_without_target
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
ALPACA = str(ASSETS / "alpaca_1000.json")
IGN = -100


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(ASSETS / "llama2_tokenizer.model")


@pytest.mark.parametrize("packed", [False, True])
def test_prompts_filling_max_seq_len_stop_the_build(tok, tmp_path, packed):
    # Every alpaca prompt is longer than 40 tokens: only ignored prompt labels are left.
    msg = (
        r"^instruct_dataset\('json'\): none of the 1000 samples has a target token within "
        r"max_seq_len=40 .*: raise max_seq_len \(the prompts fill it\), or set "
        r"train_on_input=True to learn the prompts too$"
    )
    with pytest.raises(UserValueError, match=msg):
        alpaca_dataset(
            tok, source="json", data_files=ALPACA, cache_dir=str(tmp_path),
            max_seq_len=40, train_on_input=False, packed=packed,
        )
    # the same samples are fine when the prompts are learned too
    ds = alpaca_dataset(tok, source="json", data_files=ALPACA, cache_dir=str(tmp_path),
                        max_seq_len=40, train_on_input=True)
    assert len(ds) == 1000


def test_user_turns_filling_max_seq_len_stop_the_chat_build(tok, tmp_path):
    turns = [{"from": "human", "value": "Tell me a long story. " * 20},
             {"from": "gpt", "value": "Once upon a time."}]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"conversations": turns}] * 3))
    with pytest.raises(UserValueError, match=r"none of the 3 samples .* max_seq_len=32 .*user"):
        chat_dataset(tok, "json", data_files=str(path), cache_dir=str(tmp_path / "c"),
                     max_seq_len=32)


def test_empty_texts_without_eos_stop_the_text_build(tok, tmp_path):
    path = tmp_path / "empty_lines.txt"
    path.write_text("\n\n\n")  # three empty records: BOS alone, nothing to predict
    with pytest.raises(UserValueError, match=r"none of the 3 samples .* drop empty texts"):
        text_completion_dataset(tok, "text", data_files=str(path), add_eos=False,
                                cache_dir=str(tmp_path / "c"))
    # with EOS each empty text still teaches EOS after BOS
    ds = text_completion_dataset(tok, "text", data_files=str(path),
                                 cache_dir=str(tmp_path / "c"))
    assert [ds[i]["labels"] for i in range(3)] == [[1, 2]] * 3


def test_some_samples_without_target_are_counted(tok, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = alpaca_dataset(tok, source="json", data_files=ALPACA, cache_dir=str(tmp_path),
                            max_seq_len=60, train_on_input=False)
    items = [ds[i] for i in range(len(ds))]
    n_without = sum(all(label == IGN for label in x["labels"][1:]) for x in items)
    assert 0 < n_without < 1000
    assert (
        f"instruct_dataset('json'): {n_without} of 1000 samples have no target token within "
        "max_seq_len=60 and add nothing to the loss" in caplog.text
    )


def test_count_ignores_each_samples_first_label():
    labels = [
        [5, IGN, IGN],  # only the first label is set: it is never predicted
        [IGN, 7],
        [],
        [9],
        [IGN, IGN, 3, IGN],
        [IGN] * 4,
    ]
    features = datasets.Features({"labels": datasets.Sequence(datasets.Value("int32"))})
    ds = datasets.Dataset.from_dict({"labels": labels}, features=features)
    assert count_samples_without_target(ds) == 4
    # several Arrow chunks, and a slice whose offsets do not start at 0
    two_chunks = datasets.concatenate_datasets([ds, ds])
    assert count_samples_without_target(two_chunks) == 8
    assert count_samples_without_target(two_chunks.select(range(1, 11))) == 6
