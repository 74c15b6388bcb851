"""Collate functions for preference pairs: chosen and rejected in one batch."""

from typing import Dict, List, Mapping, Sequence

import torch

from torchtune.data._collate import padded_collate, padding_free_collate
from torchtune.data._common import CROSS_ENTROPY_IGNORE_IDX

# Per-pair floats a dataset wrapper may add (cached reference log-probabilities); they
# travel through the collate as [b] tensors.
_PAIR_FLOATS = ("reference_chosen_logps", "reference_rejected_logps")


def _split_pairs(batch: Sequence[Mapping[str, List[int]]]) -> List[Dict[str, List[int]]]:
    """The b chosen sequences, then the b rejected ones."""
    if not batch:
        raise ValueError("collate_dpo: empty batch")
    chosen = [{"tokens": x["chosen_input_ids"], "labels": x["chosen_labels"]} for x in batch]
    rejected = [{"tokens": x["rejected_input_ids"], "labels": x["rejected_labels"]} for x in batch]
    return chosen + rejected


def _with_pair_floats(out: Dict[str, torch.Tensor], batch) -> Dict[str, torch.Tensor]:
    for key in _PAIR_FLOATS:
        if key in batch[0]:
            out[key] = torch.tensor([float(x[key]) for x in batch], dtype=torch.float32)
    return out


def padded_collate_dpo(
    batch: Sequence[Mapping[str, List[int]]],
    padding_idx: int = 0,
    ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX,
) -> Dict[str, torch.Tensor]:
    """Right-pad the pairs into one batch, chosen rows first: row i is pair i's chosen
    answer, row b + i its rejected one (as torchtune and TRL concatenate them).

    Args:
        batch (Sequence[Mapping[str, List[int]]]): items with "chosen_input_ids",
            "chosen_labels", "rejected_input_ids", "rejected_labels".
        padding_idx (int): id that pads tokens.
        ignore_idx (int): label that pads labels.

    Returns:
        Dict[str, torch.Tensor]: "tokens" and "labels", long ``[2b, s]`` (plus
        "reference_chosen_logps" / "reference_rejected_logps" ``[b]`` if the items have them).

    Example:
        >>> padded_collate_dpo([{"chosen_input_ids": [1, 2], "chosen_labels": [-100, 2],
        ...                      "rejected_input_ids": [1, 3, 4], "rejected_labels": [-100, 3, 4]}])
        {'tokens': tensor([[1, 2, 0], [1, 3, 4]]), 'labels': tensor([[-100, 2, -100], [-100, 3, 4]])}
    """
    out = padded_collate(_split_pairs(batch), padding_idx=padding_idx, ignore_idx=ignore_idx)
    return _with_pair_floats(out, batch)


def padding_free_collate_dpo(
    batch: Sequence[Mapping[str, List[int]]],
    padding_idx: int = 0,
    ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX,
) -> Dict[str, torch.Tensor]:
    """All 2b sequences end to end in one row, chosen first, with no padding (see
    ``padding_free_collate``): sequence i is pair i's chosen answer, b + i its rejected one.

    Args:
        batch (Sequence[Mapping[str, List[int]]]): items as for ``padded_collate_dpo``.
        padding_idx (int): unused (no padding).
        ignore_idx (int): label of positions without a target.

    Returns:
        Dict[str, torch.Tensor]: "tokens", "labels", "input_pos" ``[1, S]`` and "seq_lens"
        ``[1, 2b]`` (plus the cached reference log-probabilities ``[b]`` if present).
    """
    out = padding_free_collate(_split_pairs(batch), padding_idx=padding_idx, ignore_idx=ignore_idx)
    return _with_pair_floats(out, batch)
