import glob
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from torch.utils.data import Dataset

from torchtune.data import CROSS_ENTROPY_IGNORE_IDX

log = logging.getLogger(__name__)


def truncate(
    tokens: List[int], labels: List[int], max_seq_len: Optional[int], eos_id: Optional[int]
) -> Tuple[List[int], List[int], bool]:
    """Cut a sample to ``max_seq_len`` tokens, keeping tokens and labels aligned.

    As in torchtune, when ``eos_id`` is given a truncated sample still ends with EOS (it
    replaces the last kept token), so every sample keeps the format the model saw. The
    label of that substituted EOS is the ignore index: the model should not learn to end
    a response that was cut off mid-sentence.

    Args:
        tokens (List[int]): the ids.
        labels (List[int]): the labels, as long as ``tokens``.
        max_seq_len (Optional[int]): the limit; None keeps everything.
        eos_id (Optional[int]): EOS to keep at the end, or None to cut plainly.

    Returns:
        Tuple[List[int], List[int], bool]: tokens, labels and whether anything was cut.
    """
    if max_seq_len is None or len(tokens) <= max_seq_len:
        return tokens, labels, False
    tokens, labels = tokens[:max_seq_len], labels[:max_seq_len]
    if eos_id is not None:
        tokens[-1] = eos_id
        labels[-1] = CROSS_ENTROPY_IGNORE_IDX
    return tokens, labels, True


def _local_files(data_files: Any) -> List[str]:
    if data_files is None:
        return []
    if isinstance(data_files, (str, os.PathLike)):
        return [os.fspath(data_files)]
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in _local_files(v)]
    return [f for v in data_files for f in _local_files(v)]


def load_hf_dataset(source: str, **load_dataset_kwargs) -> "datasets.Dataset":  # noqa: F821
    """``datasets.load_dataset(source, split="train", **load_dataset_kwargs)`` with the bad
    inputs a user can make turned into one clear error before anything is tokenized.

    Args:
        source (str): a Hub dataset name, or a loader such as "json", "csv", "text" or
            "parquet" together with ``data_files``.
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``,
            ``cache_dir``, ``split`` ...).

    Returns:
        datasets.Dataset: the split.

    Raises:
        FileNotFoundError: if a local file in ``data_files`` does not exist.
        ValueError: if a file is empty, the dataset cannot be read, or it has no rows.
    """
    import datasets  # optional heavy import, only where datasets are built

    data_files = load_dataset_kwargs.get("data_files")
    described = f"{source!r}" + (f" (data_files={data_files!r})" if data_files else "")
    for f in _local_files(data_files):
        if "://" in f or glob.has_magic(f):
            continue
        if not os.path.exists(f):
            raise FileNotFoundError(f"dataset file not found: {f}")
        if os.path.isfile(f) and os.path.getsize(f) == 0:
            raise ValueError(f"dataset file is empty: {f}")
    load_dataset_kwargs.setdefault("split", "train")
    try:
        ds = datasets.load_dataset(source, **load_dataset_kwargs)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"cannot load dataset {described}: {e}") from e
    except (ValueError, datasets.exceptions.DatasetGenerationError) as e:
        raise ValueError(f"cannot load dataset {described}: {e}") from e
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(
            f"dataset {described} gave a {type(ds).__name__}, not one split; pass split=..."
        )
    if len(ds) == 0:
        raise ValueError(f"dataset {described} has no rows")
    return ds


def check_columns(ds: "datasets.Dataset", columns: List[str], source: str) -> None:  # noqa: F821
    """Raise one line naming any column the dataset lacks."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"dataset {source!r} has no column {missing[0]!r} (its columns: "
            f"{', '.join(ds.column_names)})"
        )


class TokenizedDataset(Dataset):
    """Map-style dataset of ``{"tokens": [...], "labels": [...]}`` items (see design.md),
    backed by a tokenized Hugging Face dataset stored in Arrow (memory-mapped from the
    cache, so it costs little RAM and a rebuild reuses the cache).

    Build it with ``tokenize(hf_dataset, transform, ...)`` rather than directly.

    Args:
        hf_dataset (datasets.Dataset): has list columns "tokens" and "labels".
    """

    def __init__(self, hf_dataset: "datasets.Dataset"):  # noqa: F821
        self._data = hf_dataset

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> Dict[str, List[int]]:
        row = self._data[index]
        return {"tokens": row["tokens"], "labels": row["labels"]}

    @property
    def hf_dataset(self) -> "datasets.Dataset":  # noqa: F821
        """The underlying Hugging Face dataset (its ``cache_files`` show the cache used)."""
        return self._data

    def flat_arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples end to end, read straight from Arrow (what ``PackedDataset`` packs).

        Returns:
            Tuple[np.ndarray, np.ndarray, np.ndarray]: tokens and labels concatenated over
            samples, and the length of each sample.
        """
        import pyarrow.compute as pc

        table = self._data.with_format("arrow")[:]
        out = []
        for name in ("tokens", "labels"):
            col = table.column(name).combine_chunks()
            out.append(col.flatten().to_numpy(zero_copy_only=False))
        lengths = pc.list_value_length(table.column("tokens").combine_chunks())
        return out[0], out[1], lengths.to_numpy(zero_copy_only=False).astype(np.int64)


def tokenize(
    hf_dataset: "datasets.Dataset",  # noqa: F821
    transform: Callable[[Dict[str, list], List[int]], Dict[str, list]],
    *,
    name: str,
    max_seq_len: Optional[int],
    num_proc: int = 1,
) -> TokenizedDataset:
    """Tokenize with ``hf_dataset.map`` (cached on disk, ``num_proc`` workers), then log how
    many samples were truncated.

    Args:
        hf_dataset (datasets.Dataset): the raw records.
        transform (Callable): batched ``(batch, indices) -> {"tokens", "labels",
            "truncated"}``; it must pickle deterministically, since HF datasets hashes it
            to find the cache.
        name (str): the builder's name, for the log line.
        max_seq_len (Optional[int]): the limit the transform applied, for the log line.
        num_proc (int): worker processes for ``map``.

    Returns:
        TokenizedDataset: the items.
    """
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("int32")),
            "labels": datasets.Sequence(datasets.Value("int32")),
            "truncated": datasets.Value("bool"),
        }
    )
    tokenized = hf_dataset.map(
        transform,
        batched=True,
        with_indices=True,
        remove_columns=hf_dataset.column_names,
        features=features,
        num_proc=num_proc if num_proc > 1 else None,
        desc=f"{name}: tokenizing",
    )
    import pyarrow.compute as pc

    n_truncated = pc.sum(tokenized.with_format("arrow")["truncated"]).as_py() or 0
    if n_truncated:
        log.warning(
            "%s: truncated %d of %d samples to max_seq_len=%s",
            name, n_truncated, len(tokenized), max_seq_len,
        )
    else:
        log.info("%s: %d samples, none truncated", name, len(tokenized))
    return TokenizedDataset(tokenized.remove_columns("truncated"))
