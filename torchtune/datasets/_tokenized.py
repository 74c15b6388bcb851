import glob
import importlib
import json
import logging
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from torch.utils.data import Dataset

from torchtune._errors import UserError, UserFileNotFoundError, UserOSError, UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX
from torchtune.tokenizers import Tokenizer

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


def resolve_class(obj: Union[str, type], what: str) -> type:
    """Return ``obj`` itself, or the class a dotted path such as
    "torchtune.data.AlpacaInstructTemplate" names."""
    if not isinstance(obj, str):
        return obj
    module_name, _, attr = obj.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserValueError(f"{what} {obj!r} is not an importable dotted path ({e})") from None


def not_text(value) -> str:
    """How a record's value fails to be text, for an error message."""
    return "missing" if value is None else f"of type {type(value).__name__}, not text"


def _empty_data_files(data_files: Any, key: str = "data_files") -> Optional[str]:
    """The key of an empty list or mapping in ``data_files`` (``data_files``,
    ``data_files['train']``), or None. (``datasets`` says "Empty 'data_files'", or fails
    with a bare StopIteration.)"""
    if isinstance(data_files, Mapping):
        if not data_files:
            return key
        return next(
            (e for split, v in data_files.items() if (e := _empty_data_files(v, f"{key}[{split!r}]"))),
            None,
        )
    if data_files is None or isinstance(data_files, (str, os.PathLike)):
        return None
    return key if len(list(data_files)) == 0 else None


def _local_files(data_files: Any) -> List[str]:
    if data_files is None:
        return []
    if isinstance(data_files, (str, os.PathLike)):
        return [os.fspath(data_files)]
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in _local_files(v)]
    return [f for v in data_files for f in _local_files(v)]


def resolve_max_seq_len(tokenizer: Tokenizer, max_seq_len: Optional[int]) -> Optional[int]:
    """The truncation length a builder applies: its own ``max_seq_len`` if given, else the
    tokenizer's ``max_seq_len`` attribute (torchtune 0.6.1 sets the limit on the tokenizer;
    None or absent means no limit)."""
    if max_seq_len is not None:
        return max_seq_len
    return getattr(tokenizer, "max_seq_len", None)


def pack_length(name: str, max_seq_len: Optional[int]) -> int:
    """The row length for ``packed=True``: ``max_seq_len`` as ``resolve_max_seq_len``
    gave it, or one line telling the user where to set it."""
    if max_seq_len is None:
        raise UserValueError(
            f"{name}: packed=True needs max_seq_len, the row length: set it on the "
            "tokenizer (as torchtune 0.6.1 configs do) or pass it to the dataset"
        )
    return max_seq_len


def load_hf_dataset(
    source: Optional[str],
    *,
    split: str = "train",
    filter_fn: Optional[Callable] = None,
    **load_dataset_kwargs,
) -> "datasets.Dataset":  # noqa: F821
    """``datasets.load_dataset(source, split=split, **load_dataset_kwargs)``, then
    ``.filter(filter_fn)``, with the bad inputs a user can make turned into one clear
    error before anything is tokenized.

    Args:
        source (Optional[str]): a Hub dataset name, or a loader such as "json", "csv",
            "text" or "parquet" together with ``data_files``; None is an error.
        split (str): the split, or a slice of one ("train[:10]", "train[:10%]").
        filter_fn (Optional[Callable]): keep only the records for which it returns True
            (``datasets.Dataset.filter``), before any tokenization, as in torchtune 0.6.1.
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``,
            ``name``, ``cache_dir`` ...).

    Returns:
        datasets.Dataset: the split.

    Raises:
        UserFileNotFoundError: if a local file in ``data_files`` does not exist.
        UserValueError: if ``source`` is missing, a file is empty, cannot be parsed (the
            message gives the parser's own account: the line or row and what is wrong),
            the split is unknown, or the dataset has no rows (before or after
            ``filter_fn``).
        UserOSError: if reading the files or writing the cache fails.
    """
    if source is None:
        raise UserValueError(
            "dataset: source is required: a Hugging Face dataset id, or a loader such as "
            "'json' with data_files=PATH"
        )
    import datasets  # optional heavy import, only where datasets are built

    data_files = load_dataset_kwargs.get("data_files")
    described = f"{source!r}" + (f" (data_files={data_files!r})" if data_files else "")
    empty = _empty_data_files(data_files)
    if empty:
        raise UserValueError(f"dataset {source!r}: {empty} is empty; name at least one file")
    for f in _local_files(data_files):
        if "://" in f or glob.has_magic(f):
            continue
        if not os.path.exists(f):
            raise UserFileNotFoundError(f"dataset file not found: {f}")
        if os.path.isfile(f) and os.path.getsize(f) == 0:
            raise UserValueError(f"dataset file is empty: {f}")
    try:
        ds = datasets.load_dataset(source, split=split, **load_dataset_kwargs)
    except Exception as e:
        user_error = _as_user_error(e, described, data_files)
        if user_error is None:
            raise  # a bug in datasets or in us: keep the traceback
        raise user_error from e
    if not isinstance(ds, datasets.Dataset):
        raise UserValueError(
            f"dataset {described} gave a {type(ds).__name__}, not one split; pass split=..."
        )
    if len(ds) == 0:
        raise UserValueError(f"dataset {described} has no rows")
    if filter_fn is not None:
        ds = ds.filter(filter_fn, desc="filter_fn")
        if len(ds) == 0:
            raise UserValueError(f"dataset {described}: filter_fn kept none of its rows")
    return ds


def _as_user_error(err: Exception, described: str, data_files: Any) -> Optional[UserError]:
    """The one-line user error for a failed ``load_dataset``, naming the real cause, or
    None if the cause is not about the user's files or settings (a bug).

    ``datasets`` reports any failure to parse a file as "An error occurred while generating
    the dataset" (``DatasetGenerationError``), with the parser's own message (the line or
    row and what is wrong) on the exception it was raised from.
    """
    import pyarrow as pa

    cause = _real_cause(err)
    detail = _one_line(cause)
    no_data = re.fullmatch(r'Instruction "(.*)" corresponds to no data!', detail)
    if no_data:  # a file holding "[]" or blank lines only, or a slice past the end
        return UserValueError(f"dataset {described} has no rows in split {no_data.group(1)!r}")
    if detail.startswith("JSON parse error") and _ROW.search(detail):
        detail, where = _json_lines_row_as_line(detail, data_files)
    else:
        where = _json_position_as_line(detail, data_files)
    message = f"cannot load dataset {described}: {detail}{where}"
    if isinstance(cause, FileNotFoundError):
        return UserFileNotFoundError(message)
    if isinstance(cause, OSError):
        return UserOSError(message)
    if isinstance(cause, (ValueError, pa.ArrowException)):  # parse errors are ValueErrors
        return UserValueError(message)
    return None


def _real_cause(err: BaseException) -> BaseException:
    """Follow ``err``'s explicit causes (``raise ... from``) to the last one; past a bare
    wrapper, one whose message says nothing (``datasets``' "An error occurred while
    generating the dataset"), follow the implicit context too.

    Contexts are not followed otherwise: they record what was being handled, not why.
    For a broken JSON Lines file, pyarrow's "JSON parse error: ... in row 2" is re-raised
    after ``datasets`` also failed to read the file as one JSON document, so its context is
    that fallback's misleading "Trailing data at position 10".
    """
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__
        if nxt is None and _is_bare_wrapper(err) and not err.__suppress_context__:
            nxt = err.__context__
        if nxt is None:
            break
        err = nxt
    return err


def _is_bare_wrapper(err: BaseException) -> bool:
    import datasets

    return type(err) is datasets.exceptions.DatasetGenerationError or not str(err).strip()


def _one_line(err: BaseException) -> str:
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


def _json_position_as_line(message: str, data_files: Any) -> str:
    """" (line N of FILE)" when ``message`` gives a byte position ("Expected object or value
    at position 34", from parsing a whole JSON file) and there is one local file to count
    lines in; "" otherwise."""
    match = re.search(r"at position (\d+)", message)
    files = [f for f in _local_files(data_files) if os.path.isfile(f)]
    if not match or len(files) != 1:
        return ""
    position, newlines = int(match.group(1)), 0
    with open(files[0], "rb") as f:
        while position > 0 and (block := f.read(min(position, 1 << 20))):
            newlines += block.count(b"\n")
            position -= len(block)
    return f" (line {newlines + 1} of {files[0]})"


# pyarrow's JSON Lines errors end "in row N": N counts from 0, skips blank lines, and
# restarts in each block of the file that datasets and pyarrow cut it into.
_ROW = re.compile(r"\s*in row \d+$")


def _json_lines_row_as_line(message: str, data_files: Any) -> Tuple[str, str]:
    """``message`` without pyarrow's "in row N", and " (line L of FILE)" for the first line
    of the local JSON Lines files that is not a JSON object ("" when none is found: the
    fault is then not in one line's syntax, e.g. a column that changes type)."""
    message = _ROW.sub("", message)
    for path in _local_files(data_files):
        if os.path.isfile(path):
            line = _first_bad_json_line(path)
            if line is not None:
                return message, f" (line {line} of {path})"
    return message, ""


def _first_bad_json_line(path: str) -> Optional[int]:
    """The 1-based number of the first non-blank line of ``path`` that is not a JSON
    object (as pyarrow reads it: no NaN or Infinity), or None."""

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if number == 1 and line.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                return None  # one JSON array, not JSON Lines
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line, parse_constant=no_constants), dict):
                    return number
            except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError too
                return number
    return None


def check_columns(ds: "datasets.Dataset", columns: List[str], source: str) -> None:  # noqa: F821
    """Raise one line naming any column the dataset lacks."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise UserValueError(
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
    remedy: str = "raise max_seq_len",
) -> TokenizedDataset:
    """Tokenize with ``hf_dataset.map`` (cached on disk, ``num_proc`` workers), then log how
    many samples were truncated and check that samples have something to learn.

    A sample has a target if a label other than ``CROSS_ENTROPY_IGNORE_IDX`` is left at a
    position >= 1 (the first label never is one: the recipe predicts ``labels[1:]`` from
    ``tokens[:-1]``). Samples without one, such as prompts that fill ``max_seq_len`` with
    ``train_on_input=False``, add nothing to the loss: if all are such, training could
    learn nothing and this raises; if some are, their number is logged as a warning.

    Args:
        hf_dataset (datasets.Dataset): the raw records.
        transform (Callable): batched ``(batch, indices) -> {"tokens", "labels",
            "truncated"}``; it must pickle deterministically, since HF datasets hashes it
            to find the cache.
        name (str): the builder's name, for the log line.
        max_seq_len (Optional[int]): the limit the transform applied, for the messages.
        num_proc (int): worker processes for ``map``.
        remedy (str): what the user can do about samples with no target, for the messages.

    Returns:
        TokenizedDataset: the items.

    Raises:
        UserValueError: if no sample has a target.
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
    _check_targets(tokenized, name, max_seq_len, remedy)
    return TokenizedDataset(tokenized.remove_columns("truncated"))


def _check_targets(
    tokenized: "datasets.Dataset", name: str, max_seq_len: Optional[int], remedy: str  # noqa: F821
) -> None:
    """Raise if no sample has a target, warn if some have none (see ``tokenize``)."""
    n_without = count_samples_without_target(tokenized)
    where = "at all" if max_seq_len is None else f"within max_seq_len={max_seq_len}"
    if n_without and n_without == len(tokenized):
        raise UserValueError(
            f"{name}: none of the {n_without} samples has a target token {where} (all "
            f"labels after the first are the ignore index {CROSS_ENTROPY_IGNORE_IDX}), so "
            f"there is nothing to learn: {remedy}"
        )
    if n_without:
        log.warning(
            "%s: %d of %d samples have no target token %s and add nothing to the loss: %s",
            name, n_without, len(tokenized), where, remedy,
        )


def count_samples_without_target(tokenized: "datasets.Dataset") -> int:  # noqa: F821
    """How many samples have no label other than the ignore index at positions >= 1.

    Counted from the Arrow "labels" column one chunk (record batch, 1000 rows as ``map``
    writes them) at a time, with numpy on the column's buffers: no Python lists, and
    memory bounded by a chunk.

    Args:
        tokenized (datasets.Dataset): has a list column "labels".

    Returns:
        int: the number of samples with nothing to learn.
    """
    table = tokenized.with_format("arrow")[:]
    return sum(_without_target(chunk) for chunk in table.column("labels").chunks)


def _without_target(labels: "pyarrow.ListArray") -> int:  # noqa: F821
    offsets = labels.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a sliced chunk's offsets start past 0
    is_target = labels.flatten().to_numpy() != CROSS_ENTROPY_IGNORE_IDX
    starts = offsets[:-1][np.diff(offsets) > 0]
    is_target[starts] = False  # the first label of a sample is never predicted
    targets_before = np.concatenate([[0], np.cumsum(is_target)])
    return int(np.count_nonzero(targets_before[offsets[1:]] == targets_before[offsets[:-1]]))
