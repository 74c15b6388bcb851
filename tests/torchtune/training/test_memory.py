import torch

from torchtune.training import format_memory_stats, get_memory_stats


def test_cpu_peak_rss_grows_with_a_large_allocation():
    before = get_memory_stats("cpu")
    assert set(before) == {"peak_memory_rss"}
    assert 0.01 < before["peak_memory_rss"] < 1024  # GiB: a python+torch process is > 10 MiB
    big = torch.ones(256 * 1024 * 1024 // 4)  # 256 MiB, touched so it is resident
    after = get_memory_stats("cpu")
    del big
    # The peak is at least the allocation, whatever the process held before.
    assert after["peak_memory_rss"] >= 0.25
    assert after["peak_memory_rss"] >= before["peak_memory_rss"]


def test_format_memory_stats():
    assert format_memory_stats({"peak_memory_rss": 1.5}) == "peak_memory_rss: 1.50 GiB"
