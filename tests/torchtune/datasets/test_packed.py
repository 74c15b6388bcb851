import pytest

from torchtune.datasets import PackedDataset

IGN = -100


def _items(*lengths, start=10):
    items, next_id = [], start
    for n in lengths:
        ids = list(range(next_id, next_id + n))
        items.append({"tokens": ids, "labels": [t + 1000 for t in ids]})
        next_id += n
    return items


def test_greedy_rows_pad_the_tail_of_each_row():
    ds = PackedDataset(_items(3, 2, 4, 1), max_seq_len=6, padding_idx=0)
    assert len(ds) == 2
    assert ds[0] == {
        "tokens": [10, 11, 12, 13, 14, 0],
        "labels": [IGN, 1011, 1012, IGN, 1014, IGN],
        "input_pos": [0, 1, 2, 0, 1, 0],
        "seq_lens": [3, 2, 1],
    }
    assert ds[1] == {
        "tokens": [15, 16, 17, 18, 19, 0],
        "labels": [IGN, 1016, 1017, 1018, IGN, IGN],
        "input_pos": [0, 1, 2, 3, 0, 0],
        "seq_lens": [4, 1, 1],
    }
    assert ds[-1] == ds[1]


def test_exact_fit_has_no_padding_document():
    ds = PackedDataset(_items(2, 4), max_seq_len=6)
    assert len(ds) == 1 and ds[0]["seq_lens"] == [2, 4]
    assert ds[0]["input_pos"] == [0, 1, 0, 1, 2, 3]


def test_split_across_pack_pads_only_the_last_row():
    ds = PackedDataset(_items(4, 5, 2), max_seq_len=4, padding_idx=7, split_across_pack=True)
    assert len(ds) == 3
    assert ds[0] == {
        "tokens": [10, 11, 12, 13],
        "labels": [IGN, 1011, 1012, 1013],
        "input_pos": [0, 1, 2, 3],
        "seq_lens": [4],
    }
    # the 5-token sample is split; its remainder restarts positions in the next row
    assert ds[1] == {
        "tokens": [14, 15, 16, 17],
        "labels": [IGN, 1015, 1016, 1017],
        "input_pos": [0, 1, 2, 3],
        "seq_lens": [4],
    }
    assert ds[2] == {
        "tokens": [18, 19, 20, 7],
        "labels": [IGN, IGN, 1020, IGN],
        "input_pos": [0, 0, 1, 0],
        "seq_lens": [1, 2, 1],
    }


def test_errors():
    with pytest.raises(ValueError, match=r"sample 1 has 7 tokens, more than max_seq_len=6"):
        PackedDataset(_items(2, 7), max_seq_len=6)
    with pytest.raises(ValueError, match="the dataset is empty"):
        PackedDataset([], max_seq_len=6)
    with pytest.raises(ValueError, match="sample 0 has 2 tokens but 1 labels"):
        PackedDataset([{"tokens": [1, 2], "labels": [1]}], max_seq_len=6)
    with pytest.raises(IndexError, match=r"row 5 out of range \[0, 1\)"):
        PackedDataset(_items(2), max_seq_len=6)[5]
