import logging

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from torchtune.data import ResumableSampler


def _batches(sampler, n, batch_size):
    loader = DataLoader(list(range(n)), batch_size=batch_size, sampler=sampler)
    return [b.tolist() for b in loader]


@pytest.mark.parametrize(
    "n, replicas, seed, epoch", [(100, 1, 0, 0), (101, 2, 7, 3), (10, 4, 1, 1)]
)
def test_matches_distributed_sampler(n, replicas, seed, epoch):
    for rank in range(replicas):
        ours = ResumableSampler(n, num_replicas=replicas, rank=rank, seed=seed)
        ours.set_epoch(epoch)
        ref = DistributedSampler(range(n), num_replicas=replicas, rank=rank, seed=seed)
        ref.set_epoch(epoch)
        assert list(ours) == list(ref)
        assert len(ours) == len(ref)


def test_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        s = ResumableSampler(50, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(3, 2) == order(3, 2)
    assert order(3, 2) != order(3, 1)
    assert order(3, 2) != order(4, 2)
    assert sorted(order(3, 2)) == list(range(50))
    # seed + epoch is what seeds the generator, as in DistributedSampler
    assert order(3, 2) == order(4, 1)
    s = ResumableSampler(50, shuffle=False)
    s.set_epoch(5)
    assert list(s) == list(range(50))


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("step", [0, 1, 7, 12])
def test_restart_mid_epoch_yields_the_remaining_batches(replicas, step):
    n, batch_size, epoch = 100, 4, 2
    for rank in range(replicas):
        full = ResumableSampler(n, num_replicas=replicas, rank=rank, seed=11)
        full.set_epoch(epoch)
        uninterrupted = _batches(full, n, batch_size)

        resumed = ResumableSampler(n, num_replicas=replicas, rank=rank, seed=11)
        resumed.set_epoch(epoch, start_index=step * batch_size)
        assert _batches(resumed, n, batch_size) == uninterrupted[step:]
        assert len(resumed) == n // replicas - step * batch_size

        # the next epoch starts from the beginning again
        resumed.set_epoch(epoch + 1)
        full.set_epoch(epoch + 1)
        assert list(resumed) == list(full)


def test_two_ranks_are_disjoint_and_cover_the_data():
    shards = []
    for rank in range(2):
        s = ResumableSampler(1000, num_replicas=2, rank=rank, seed=5)
        s.set_epoch(1)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1]) == 500
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(1000))


def test_uneven_split_repeats_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        shards = [list(ResumableSampler(11, num_replicas=4, rank=r, seed=0)) for r in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 3]
    everything = sum(shards, [])
    assert set(everything) == set(range(11))  # nothing dropped
    assert len(everything) - len(set(everything)) == 1
    assert "1 of 11 samples are repeated" in caplog.text


def test_drop_last_drops_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        shards = [
            list(ResumableSampler(11, num_replicas=4, rank=r, seed=0, drop_last=True))
            for r in range(4)
        ]
    assert [len(s) for s in shards] == [2, 2, 2, 2]
    assert len(set(sum(shards, []))) == 8
    assert "3 of 11 samples are dropped" in caplog.text


def test_accepts_a_dataset():
    assert len(ResumableSampler(torch.zeros(6, 2), shuffle=False)) == 6


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        ResumableSampler(0)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, num_replicas=2\)"):
        ResumableSampler(10, num_replicas=2, rank=2)
    s = ResumableSampler(10, num_replicas=2)
    with pytest.raises(ValueError, match=r"start_index 6 is not in \[0, 5\]"):
        s.set_epoch(0, start_index=6)
