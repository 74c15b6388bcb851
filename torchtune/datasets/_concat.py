import bisect
from typing import Dict, List, Sequence

import numpy as np
from torch.utils.data import Dataset

from torchtune._errors import UserValueError
from torchtune.datasets._packed import PackedDataset


class ConcatDataset(Dataset):
    """Several datasets one after the other, as one map-style dataset (torchtune 0.6.1's
    ``ConcatDataset``, which its recipes build when a config's ``dataset`` is a list).

    Either all the datasets are packed or none is: ``packed`` says which, so a recipe
    picks the collate function once.

    Args:
        datasets (Sequence[Dataset]): the datasets, in order.

    Raises:
        UserValueError: if ``datasets`` is empty, or mixes packed and unpacked datasets.
    """

    def __init__(self, datasets: Sequence[Dataset]):
        self._datasets: List[Dataset] = list(datasets)
        if not self._datasets:
            raise UserValueError("ConcatDataset: no datasets given")
        is_packed = [isinstance(ds, PackedDataset) for ds in self._datasets]
        if any(is_packed) and not all(is_packed):
            raise UserValueError(
                "ConcatDataset: datasets "
                f"{', '.join(str(i) for i, p in enumerate(is_packed) if p)} are packed and "
                "the others are not; set packed the same on every dataset"
            )
        self.packed = all(is_packed)
        self._ends = np.cumsum([len(ds) for ds in self._datasets]).tolist()

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> Dict[str, List[int]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"ConcatDataset: index {index} out of range [0, {len(self)})")
        which = bisect.bisect_right(self._ends, index)
        start = self._ends[which - 1] if which else 0
        return self._datasets[which][index - start]
