import logging
import math
from typing import Iterator, Sized, Union

import torch
from torch.utils.data import Sampler

from torchtune._errors import UserValueError

log = logging.getLogger(__name__)


class ResumableSampler(Sampler[int]):
    """Shuffles by seed, shards across ranks, and can start an epoch part-way through.

    The order depends only on ``seed`` and the epoch: like
    ``torch.utils.data.DistributedSampler``, epoch ``e`` uses ``torch.randperm`` from a
    ``torch.Generator`` seeded with ``seed + e``, so the permutation (and each rank's
    shard) is the same as DistributedSampler's. Rank ``r`` takes every
    ``num_replicas``-th index starting at ``r``.

    To resume after ``k`` optimizer steps into an epoch, call
    ``set_epoch(epoch, start_index=k * batch_size * gradient_accumulation_steps)``: the
    sampler then yields exactly the indices the uninterrupted epoch had left on this rank.
    The next ``set_epoch`` without ``start_index`` starts from the beginning again.

    When the dataset does not divide evenly among ranks, every rank must still see the same
    number of samples (or collectives hang). ``drop_last=False`` repeats the first few
    indices of the permutation to fill the last round; ``drop_last=True`` drops the tail.
    Either way the number of repeated or dropped samples is logged once.

    Args:
        data_source (Union[int, Sized]): the dataset, or its length.
        num_replicas (int): number of ranks (data-parallel world size).
        rank (int): this rank, in ``[0, num_replicas)``.
        shuffle (bool): shuffle each epoch; False keeps dataset order.
        seed (int): base seed, the same on every rank.
        drop_last (bool): drop the tail instead of repeating indices.

    Example:
        >>> sampler = ResumableSampler(len(ds), num_replicas=2, rank=0, seed=3)
        >>> sampler.set_epoch(1, start_index=40)
        >>> loader = DataLoader(ds, batch_size=8, sampler=sampler, collate_fn=padded_collate)
    """

    def __init__(
        self,
        data_source: Union[int, Sized],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        n = data_source if isinstance(data_source, int) else len(data_source)
        if n <= 0:
            raise UserValueError(f"ResumableSampler: the dataset is empty (length {n})")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"ResumableSampler: rank {rank} is not in [0, num_replicas={num_replicas})"
            )
        self.dataset_len = n
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        if drop_last:
            if n < num_replicas:
                raise UserValueError(
                    f"ResumableSampler: {n} samples cannot give each of {num_replicas} "
                    "ranks one with drop_last=True"
                )
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        if self.total_size != n and rank == 0:
            what = "dropped" if drop_last else "repeated"
            log.warning(
                "ResumableSampler: %d of %d samples are %s each epoch so that %d ranks get "
                "%d samples each",
                abs(n - self.total_size), n, what, num_replicas, self.num_samples,
            )
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Select the epoch to iterate, and where in this rank's shard to start.

        Args:
            epoch (int): the epoch; it seeds the shuffle.
            start_index (int): number of this rank's samples already consumed in the epoch.
        """
        if not 0 <= start_index <= self.num_samples:
            raise ValueError(
                f"ResumableSampler: start_index {start_index} is not in "
                f"[0, {self.num_samples}] (samples per rank per epoch)"
            )
        self.epoch = epoch
        self.start_index = start_index

    def _epoch_indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.dataset_len, generator=g)
        else:
            indices = torch.arange(self.dataset_len)
        if self.total_size > self.dataset_len:
            reps = math.ceil(self.total_size / self.dataset_len)
            indices = indices.repeat(reps)
        return indices[: self.total_size]

    def __iter__(self) -> Iterator[int]:
        shard = self._epoch_indices()[self.rank : self.total_size : self.num_replicas]
        return iter(shard[self.start_index :].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start_index
