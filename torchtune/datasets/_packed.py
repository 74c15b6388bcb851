import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
from torch.utils.data import Dataset

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX

log = logging.getLogger(__name__)


def _flatten(ds: Dataset) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    if hasattr(ds, "flat_arrays"):  # TokenizedDataset: read straight from Arrow
        return ds.flat_arrays()
    items = [ds[i] for i in range(len(ds))]
    lengths = np.array([len(x["tokens"]) for x in items], dtype=np.int64)
    for i, x in enumerate(items):
        if len(x["labels"]) != len(x["tokens"]):
            raise ValueError(
                f"PackedDataset: sample {i} has {len(x['tokens'])} tokens but "
                f"{len(x['labels'])} labels"
            )
    tokens = np.fromiter((t for x in items for t in x["tokens"]), np.int64, int(lengths.sum()))
    labels = np.fromiter((t for x in items for t in x["labels"]), np.int64, int(lengths.sum()))
    return tokens, labels, lengths


class PackedDataset(Dataset):
    """Packs samples, in order, into rows of exactly ``max_seq_len`` tokens.

    Greedy: a row takes samples until the next one does not fit. With
    ``split_across_pack=False`` that row is then padded at its end; with ``True`` the
    next sample is split, its remainder starting the next row, so that only the last row
    has padding (use it for continued pretraining, where documents may be longer than a
    row). Each item (see docs/design.md) is::

        tokens     d0 d0 d0 d1 d1 pad pad        (ids)
        labels    -100 l l -100 l -100 -100      (first label of each document ignored)
        input_pos  0  1  2  0  1  0   1          (restart per document)
        seq_lens   [3, 2, 2]                     (padding counts as one more document)

    A document's first label is the ignore index so that the shifted target at a
    boundary (predicting a document's first token from the previous document's last)
    is never learned; with the block-causal mask from ``padded_collate`` a packed row then
    gives the same per-token losses as its samples run one by one.

    Args:
        ds (Dataset): map-style dataset of ``{"tokens", "labels"}`` items.
        max_seq_len (int): the row length.
        padding_idx (int): id that pads tokens.
        split_across_pack (bool): split samples across rows instead of padding each row.
        max_packs (Optional[int]): keep only the first this many rows (torchtune 0.6.1's
            argument); None keeps all.

    Raises:
        UserValueError: if ``ds`` is empty, or (without ``split_across_pack``) a sample is
            longer than ``max_seq_len``, naming its index.
    """

    def __init__(
        self,
        ds: Dataset,
        max_seq_len: int,
        padding_idx: int = 0,
        split_across_pack: bool = False,
        max_packs: Optional[int] = None,
    ):
        if max_packs is not None and max_packs < 1:
            raise UserValueError(f"PackedDataset: max_packs must be positive, got {max_packs}")
        if max_seq_len < 1:
            raise UserValueError(
                f"PackedDataset: max_seq_len must be positive, got {max_seq_len}"
            )
        if len(ds) == 0:
            raise UserValueError("PackedDataset: the dataset is empty")
        tokens, labels, lengths = _flatten(ds)
        self.max_seq_len = max_seq_len
        self.padding_idx = padding_idx
        self.split_across_pack = split_across_pack
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._tokens = tokens
        self._labels = np.array(labels, copy=True)
        starts = self._offsets[:-1][lengths > 0]
        self._labels[starts] = CROSS_ENTROPY_IGNORE_IDX
        total = int(self._offsets[-1])
        if split_across_pack:
            self._rows = None
            n_rows = -(-total // max_seq_len)
        else:
            too_long = np.flatnonzero(lengths > max_seq_len)
            if too_long.size:
                i = int(too_long[0])
                raise UserValueError(
                    f"PackedDataset: sample {i} has {int(lengths[i])} tokens, more than "
                    f"max_seq_len={max_seq_len}; truncate it or use split_across_pack=True"
                )
            self._rows = self._greedy_rows(lengths.tolist(), max_seq_len)
            n_rows = len(self._rows)
        if max_packs is not None and n_rows > max_packs:
            n_rows = max_packs
            total = min(total, int(self._window(n_rows - 1)[1]))
        self._n_rows = n_rows
        log.info(
            "PackedDataset: packed %d samples into %d rows of %d tokens (%.1f%% padding)",
            len(lengths), n_rows, max_seq_len, 100 * (1 - total / (n_rows * max_seq_len)),
        )

    @staticmethod
    def _greedy_rows(lengths: List[int], max_seq_len: int) -> List[Tuple[int, int]]:
        rows, start, used = [], 0, 0
        for i, n in enumerate(lengths):
            if used + n > max_seq_len:
                rows.append((start, i))
                start, used = i, 0
            used += n
        rows.append((start, len(lengths)))
        return rows

    def __len__(self) -> int:
        return self._n_rows

    def _window(self, index: int) -> Tuple[int, int, np.ndarray]:
        """Flat token range of a row and the document boundaries inside it."""
        if self._rows is None:
            lo = index * self.max_seq_len
            hi = min(lo + self.max_seq_len, int(self._offsets[-1]))
        else:
            a, b = self._rows[index]
            lo, hi = int(self._offsets[a]), int(self._offsets[b])
        inner = self._offsets[(self._offsets > lo) & (self._offsets < hi)]
        return lo, hi, np.unique(np.concatenate([[lo], inner, [hi]]))

    def __getitem__(self, index: int) -> Dict[str, List[int]]:
        if index < 0:
            index += self._n_rows
        if not 0 <= index < self._n_rows:
            raise IndexError(f"PackedDataset: row {index} out of range [0, {self._n_rows})")
        lo, hi, bounds = self._window(index)
        seq_lens = np.diff(bounds)
        tokens = self._tokens[lo:hi].astype(np.int64)
        labels = self._labels[lo:hi].astype(np.int64)
        labels[0] = CROSS_ENTROPY_IGNORE_IDX  # a sample split across rows restarts here
        pad = self.max_seq_len - (hi - lo)
        if pad:
            tokens = np.concatenate([tokens, np.full(pad, self.padding_idx, np.int64)])
            labels = np.concatenate([labels, np.full(pad, CROSS_ENTROPY_IGNORE_IDX, np.int64)])
            seq_lens = np.concatenate([seq_lens, [pad]])
        doc_starts = np.concatenate([[0], np.cumsum(seq_lens)[:-1]])
        input_pos = np.arange(self.max_seq_len) - np.repeat(doc_starts, seq_lens)
        return {
            "tokens": tokens.tolist(),
            "labels": labels.tolist(),
            "input_pos": input_pos.tolist(),
            "seq_lens": seq_lens.tolist(),
        }

