"""The longest run of positions a dataset feeds the model, read from Arrow lengths, equals
what its items hold; a sample past the model's max_seq_len is refused in one line (issue
24, item 9)."""

from pathlib import Path

import numpy as np
import pytest

from torchtune import UserValueError
from torchtune.datasets import ConcatDataset, check_sample_lengths, preference_dataset, text_completion_dataset
from torchtune.datasets._lengths import sequence_lengths
from torchtune.models.llama2 import llama2_tokenizer

REPO = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def tok():
    return llama2_tokenizer(str(REPO / "torchtune" / "assets" / "stories260K" / "tokenizer.model"))


def _from_items(dataset):
    """The reference: every item read whole."""
    keys = ("tokens", "chosen_input_ids", "rejected_input_ids")
    return np.asarray([max(len(dataset[i][k]) for k in keys if k in dataset[i]) for i in range(len(dataset))])


def test_lengths_of_samples_pairs_and_concat_equal_their_items(tok):
    text = dict(source="text", data_files=str(REPO / "torchtune" / "assets" / "tinyshakespeare.txt"), sample_by="paragraph",
                split="train[:200]")
    samples = text_completion_dataset(tok, max_seq_len=48, **text)
    assert np.array_equal(sequence_lengths(samples), _from_items(samples))
    pairs = preference_dataset(tok, source="json", data_files=str(REPO / "torchtune" / "assets" / "dpo_en_demo_subset.json"),
                               column_map={"prompt": "conversations"}, max_seq_len=400)
    assert np.array_equal(sequence_lengths(pairs), _from_items(pairs))
    both = ConcatDataset([samples, samples])
    assert np.array_equal(sequence_lengths(both), np.concatenate([_from_items(samples)] * 2))


def test_packed_rows_count_their_documents(tok):
    text = dict(source="text", data_files=str(REPO / "torchtune" / "assets" / "tinyshakespeare.txt"), sample_by="paragraph",
                split="train[:200]")
    packed = text_completion_dataset(tok, max_seq_len=64, packed=True, split_across_pack=False, **text)
    unpacked = text_completion_dataset(tok, max_seq_len=64, **text)
    lengths = sequence_lengths(packed)  # the documents, not the rows of 64
    assert np.array_equal(lengths, _from_items(unpacked)) and len(lengths) > len(packed)
    split = text_completion_dataset(tok, max_seq_len=16, packed=True, **text)  # documents cut by rows
    assert sequence_lengths(split).max() == 16
    check_sample_lengths(packed, 64)
    with pytest.raises(UserValueError, match=rf"dataset: sample \d+ has {lengths.max()} tokens, more than the model's max_seq_len 8"):
        check_sample_lengths(packed, 8)


def test_too_long_sample_is_one_line_naming_key_and_fix(tok):
    samples = text_completion_dataset(tok, source="text", data_files=str(REPO / "torchtune" / "assets" / "tinyshakespeare.txt"),
                                      sample_by="document", max_seq_len=300)
    check_sample_lengths(samples, 300)
    with pytest.raises(UserValueError) as err:
        check_sample_lengths(samples, 256, key="validation_dataset")
    assert str(err.value) == (
        "validation_dataset: sample 0 has 300 tokens, more than the model's max_seq_len 256 (its positions "
        "end there); set validation_dataset.max_seq_len=256 (or less) to cut samples to fit, or build the "
        "model with a larger max_seq_len"
    )
