from typing import Dict, List, Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from torchtune.data._common import CROSS_ENTROPY_IGNORE_IDX


def _as_long(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.long)


def padded_collate(
    batch: Sequence[Mapping[str, List[int]]],
    padding_idx: int = 0,
    ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX,
) -> Dict[str, torch.Tensor]:
    """Batch samples, right-padding tokens and labels to the longest sample.

    Packed items (with "seq_lens", from ``PackedDataset``) are all ``max_seq_len`` long
    already and go to ``packed_collate``, which adds ``input_pos`` and the document lengths.

    Args:
        batch (Sequence[Mapping[str, List[int]]]): items with "tokens" and "labels".
        padding_idx (int): id that pads tokens.
        ignore_idx (int): label that pads labels (no loss).

    Returns:
        Dict[str, torch.Tensor]: "tokens" and "labels", both long ``[b, s]``.

    Example:
        >>> padded_collate([{"tokens": [1, 2], "labels": [3, 4]}, {"tokens": [5], "labels": [6]}])
        {'tokens': tensor([[1, 2], [5, 0]]), 'labels': tensor([[3, 4], [6, -100]])}
    """
    if not batch:
        raise ValueError("padded_collate: empty batch")
    if "seq_lens" in batch[0]:
        return packed_collate(batch)
    for i, item in enumerate(batch):
        if len(item["tokens"]) != len(item["labels"]):
            raise ValueError(
                f"padded_collate: item {i} has {len(item['tokens'])} tokens but "
                f"{len(item['labels'])} labels"
            )
    tokens = pad_sequence(
        [_as_long(x["tokens"]) for x in batch], batch_first=True, padding_value=padding_idx
    )
    labels = pad_sequence(
        [_as_long(x["labels"]) for x in batch], batch_first=True, padding_value=ignore_idx
    )
    return {"tokens": tokens, "labels": labels}


def block_causal_mask(seq_lens: Sequence[Sequence[int]]) -> torch.Tensor:
    """Attention mask for packed rows: causal inside each document, nothing across.

    The collates do not build it (it costs S x S; the model takes ``seq_lens``); it is
    the explicit form, for callers that need one.

    Args:
        seq_lens (Sequence[Sequence[int]]): per row, the document lengths (summing to the
            same ``s`` for every row).

    Returns:
        torch.Tensor: bool ``[b, s, s]``, True where query i may attend to key j.

    Example::

        seq_lens [[2, 3]] ->  1 0 0 0 0
                              1 1 0 0 0
                              0 0 1 0 0
                              0 0 1 1 0
                              0 0 1 1 1
    """
    doc_ids = torch.stack(
        [
            torch.repeat_interleave(torch.arange(len(row)), _as_long(row))
            for row in seq_lens
        ]
    )  # [b, s]
    s = doc_ids.shape[1]
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # [b, s, s]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    return same_doc & causal


def packed_collate(batch: Sequence[Mapping[str, List[int]]]) -> Dict[str, torch.Tensor]:
    """Batch packed rows (items of ``PackedDataset``).

    Args:
        batch (Sequence[Mapping[str, List[int]]]): items with "tokens", "labels",
            "input_pos" and "seq_lens", all rows of the same length.

    Returns:
        Dict[str, torch.Tensor]: "tokens", "labels", "input_pos" long ``[b, s]`` and
        "seq_lens" long ``[b, n]``: each row's document lengths, zero-padded to the row
        with the most documents (``TransformerDecoder`` keeps attention inside each).
    """
    lengths = {len(x["tokens"]) for x in batch}
    if len(lengths) != 1:
        raise ValueError(f"packed_collate: rows of different lengths {sorted(lengths)}")
    for i, x in enumerate(batch):
        if int(sum(x["seq_lens"])) != len(x["tokens"]):
            raise ValueError(
                f"packed_collate: item {i} seq_lens sum to {int(sum(x['seq_lens']))}, "
                f"not its length {len(x['tokens'])}"
            )
    return {
        "tokens": torch.stack([_as_long(x["tokens"]) for x in batch]),
        "labels": torch.stack([_as_long(x["labels"]) for x in batch]),
        "input_pos": torch.stack([_as_long(x["input_pos"]) for x in batch]),
        "seq_lens": pad_sequence([_as_long(x["seq_lens"]) for x in batch], batch_first=True),
    }


def padding_free_collate(
    batch: Sequence[Mapping[str, List[int]]],
    padding_idx: int = 0,
    ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX,
) -> Dict[str, torch.Tensor]:
    """Batch samples as one row, end to end, with no padding at all.

    The same samples as ``padded_collate`` and the same loss: each sample is a document of
    the row (block-causal mask, ``input_pos`` restarting at 0, its first label ignored, so
    no target crosses a boundary, as in ``PackedDataset``). Nothing is computed for
    padding, and attention runs per document (``MultiHeadAttention``). Packed items go to
    ``packed_collate``, as in ``padded_collate``. The boundaries travel as document
    lengths, so a batch costs memory in proportion to its tokens.

    Args:
        batch (Sequence[Mapping[str, List[int]]]): items with "tokens" and "labels".
        padding_idx (int): unused (no padding); kept for the ``padded_collate`` signature.
        ignore_idx (int): label that marks a token with no loss.

    Returns:
        Dict[str, torch.Tensor]: "tokens", "labels", "input_pos" long ``[1, S]`` (S = the
        samples' total length) and "seq_lens" long ``[1, b]`` (the samples' lengths).

    Example::

        items  [1, 2] / [3, 4]  and  [5] / [6]      (tokens / labels)
        ->  tokens [[1, 2, 5]]   labels [[-100, 4, -100]]   input_pos [[0, 1, 0]]
    """
    if not batch:
        raise ValueError("padding_free_collate: empty batch")
    if "seq_lens" in batch[0]:
        return packed_collate(batch)
    lengths = []
    for i, item in enumerate(batch):
        if len(item["tokens"]) != len(item["labels"]):
            raise ValueError(
                f"padding_free_collate: item {i} has {len(item['tokens'])} tokens but "
                f"{len(item['labels'])} labels"
            )
        if not len(item["tokens"]):
            raise ValueError(f"padding_free_collate: item {i} is empty")
        lengths.append(len(item["tokens"]))
    tokens = torch.cat([_as_long(x["tokens"]) for x in batch])[None]
    labels = torch.cat([_as_long(x["labels"]) for x in batch])[None]
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    labels[0, starts] = ignore_idx  # no target across a sample boundary
    input_pos = torch.cat([torch.arange(n) for n in lengths])[None]
    return {"tokens": tokens, "labels": labels, "input_pos": input_pos, "seq_lens": _as_long([lengths])}
