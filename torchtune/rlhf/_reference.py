"""Cached reference log-probabilities: computed once per sample, carried by the dataset."""

from typing import Any, Dict

import torch
from torch.utils.data import Dataset


class ReferenceLogProbsDataset(Dataset):
    """A preference dataset whose items also carry the reference model's summed
    log-probabilities of their chosen and rejected answers, so the reference forward runs
    once per sample rather than once per step (the reference never changes).
    ``padded_collate_dpo`` / ``padding_free_collate_dpo`` pass them on as ``[b]`` tensors.

    Args:
        dataset (Dataset): items as ``PreferenceDataset`` gives them.
        log_probs (torch.Tensor): ``[len(dataset), 2]`` fp32, (chosen, rejected) per sample.
    """

    def __init__(self, dataset: Dataset, log_probs: torch.Tensor):
        if log_probs.shape != (len(dataset), 2):
            raise ValueError(f"log_probs has shape {tuple(log_probs.shape)}, expected ({len(dataset)}, 2)")
        self._dataset = dataset
        self._log_probs = log_probs.float().cpu()

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = dict(self._dataset[index])
        item["reference_chosen_logps"] = float(self._log_probs[index, 0])
        item["reference_rejected_logps"] = float(self._log_probs[index, 1])
        return item
