"""Checking, before training, that every sample fits the model's positions.

A decoder's ``max_seq_len`` is where its positions end (the RoPE cache has that many
rows). A sample longer than that trains until a batch holds it and then fails deep in the
model. Positions restart with each sample (padding-free batches) and with each document of
a packed row, so what must fit is the longest sample, document or preference answer, not a
batch row. The lengths are read from the tokenized Arrow columns without touching the
tokens, so the check costs little even for large datasets.
"""

from typing import Tuple

import numpy as np
from torch.utils.data import Dataset

from torchtune._errors import UserValueError
from torchtune.datasets._concat import ConcatDataset
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._preference import PreferenceDataset
from torchtune.datasets._tokenized import TokenizedDataset

_SEQUENCE_KEYS = ("tokens", "chosen_input_ids", "rejected_input_ids")


def _arrow_lengths(hf_dataset, columns) -> np.ndarray:
    import pyarrow.compute as pc

    table = hf_dataset.with_format("arrow")[:]
    per_column = [
        pc.list_value_length(table.column(c).combine_chunks()).to_numpy(zero_copy_only=False)
        for c in columns
    ]
    return np.max(np.stack(per_column), axis=0).astype(np.int64)


def sequence_lengths(dataset: Dataset) -> np.ndarray:
    """The length of each run of positions the model sees in ``dataset``, per item: a
    sample, the longest document of a packed row's samples (per sample), the longer answer
    of a preference pair."""
    if isinstance(dataset, TokenizedDataset):
        return _arrow_lengths(dataset.hf_dataset, ["tokens"])
    if isinstance(dataset, PreferenceDataset):
        return _arrow_lengths(dataset._data, ["chosen_input_ids", "rejected_input_ids"])
    if isinstance(dataset, PackedDataset):
        lengths = np.diff(dataset._offsets)
        # A sample split across rows restarts its positions in each row.
        return np.minimum(lengths, dataset.max_seq_len) if dataset.split_across_pack else lengths
    if isinstance(dataset, ConcatDataset):
        parts = [sequence_lengths(ds) for ds in dataset._datasets]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    inner = getattr(dataset, "_dataset", None)  # wrappers such as ReferenceLogProbsDataset
    if isinstance(inner, Dataset):
        return sequence_lengths(inner)
    lengths = []
    for i in range(len(dataset)):  # any other map-style dataset: read each item
        item = dataset[i]
        lengths.append(max(len(item[k]) for k in _SEQUENCE_KEYS if k in item))
    return np.asarray(lengths, np.int64)


def longest_sequence(dataset: Dataset) -> Tuple[int, int]:
    """``(index, length)`` of the longest entry of ``sequence_lengths`` (-1, 0 if empty)."""
    lengths = sequence_lengths(dataset)
    if lengths.size == 0:
        return -1, 0
    i = int(np.argmax(lengths))
    return i, int(lengths[i])


def check_sample_lengths(dataset: Dataset, max_seq_len: int, key: str = "dataset") -> None:
    """Refuse a dataset with a sample longer than the model's ``max_seq_len``.

    Args:
        dataset (Dataset): the built dataset.
        max_seq_len (int): the model's limit (``model.max_seq_len``).
        key (str): the dataset's config key, for the message.

    Raises:
        UserValueError: naming the sample, both lengths and the setting that cuts samples.
    """
    index, length = longest_sequence(dataset)
    if length > max_seq_len:
        raise UserValueError(
            f"{key}: sample {index} has {length} tokens, more than the model's max_seq_len "
            f"{max_seq_len} (its positions end there); set {key}.max_seq_len={max_seq_len} "
            "(or less) to cut samples to fit, or build the model with a larger max_seq_len"
        )
