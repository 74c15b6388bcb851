import pytest
import torch

from torchtune.data import block_causal_mask, packed_collate, padded_collate


def test_padded_collate_pads_to_longest():
    batch = [
        {"tokens": [1, 5, 6, 2], "labels": [-100, 5, 6, 2]},
        {"tokens": [1, 7], "labels": [-100, 7]},
        {"tokens": [1, 8, 2], "labels": [1, 8, 2]},
    ]
    out = padded_collate(batch, padding_idx=0, ignore_idx=-100)
    assert set(out) == {"tokens", "labels"}
    assert out["tokens"].dtype == out["labels"].dtype == torch.long
    assert out["tokens"].tolist() == [[1, 5, 6, 2], [1, 7, 0, 0], [1, 8, 2, 0]]
    assert out["labels"].tolist() == [[-100, 5, 6, 2], [-100, 7, -100, -100], [1, 8, 2, -100]]


def test_padded_collate_custom_padding():
    out = padded_collate(
        [{"tokens": [3], "labels": [3]}, {"tokens": [4, 5], "labels": [4, 5]}],
        padding_idx=9,
        ignore_idx=-1,
    )
    assert out["tokens"].tolist() == [[3, 9], [4, 5]]
    assert out["labels"].tolist() == [[3, -1], [4, 5]]


def test_padded_collate_rejects_misaligned_labels():
    with pytest.raises(ValueError, match="item 1 has 2 tokens but 1 labels"):
        padded_collate([{"tokens": [1], "labels": [1]}, {"tokens": [1, 2], "labels": [1]}])


def test_block_causal_mask():
    mask = block_causal_mask([[2, 3], [5]])
    expected0 = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert mask.dtype == torch.bool and mask.shape == (2, 5, 5)
    assert torch.equal(mask[0], expected0)
    assert torch.equal(mask[1], torch.ones(5, 5, dtype=torch.bool).tril())


def test_packed_items_get_input_pos_and_mask():
    batch = [
        {
            "tokens": [1, 5, 1, 6],
            "labels": [-100, 5, -100, 6],
            "input_pos": [0, 1, 0, 1],
            "seq_lens": [2, 2],
        },
        {
            "tokens": [1, 7, 8, 0],
            "labels": [-100, 7, 8, -100],
            "input_pos": [0, 1, 2, 0],
            "seq_lens": [3, 1],
        },
    ]
    out = padded_collate(batch)
    assert set(out) == {"tokens", "labels", "input_pos", "seq_lens"}  # no [b, s, s] mask
    assert out["tokens"].tolist() == [[1, 5, 1, 6], [1, 7, 8, 0]]
    assert out["input_pos"].tolist() == [[0, 1, 0, 1], [0, 1, 2, 0]]
    assert out["seq_lens"].tolist() == [[2, 2], [3, 1]]


def test_packed_collate_pads_seq_lens_of_rows_with_fewer_documents():
    row = lambda lens: {"tokens": [1] * 4, "labels": [1] * 4, "input_pos": [0] * 4, "seq_lens": lens}
    out = padded_collate([row([4]), row([1, 1, 2])])
    assert out["seq_lens"].tolist() == [[4, 0, 0], [1, 1, 2]]


def test_packed_collate_errors():
    row = {"tokens": [1, 2], "labels": [1, 2], "input_pos": [0, 1], "seq_lens": [2]}
    with pytest.raises(ValueError, match="different lengths"):
        packed_collate([row, {**row, "tokens": [1, 2, 3]}])
    with pytest.raises(ValueError, match="item 0 seq_lens sum to 3, not its length 2"):
        packed_collate([{**row, "seq_lens": [1, 2]}])
    with pytest.raises(ValueError, match="empty batch"):
        padded_collate([])
