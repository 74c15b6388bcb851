import random

import numpy as np
import pytest
import torch

from torchtune.training import get_rng_state, set_rng_state, set_seed


def _draw():
    return (random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3))


def test_set_seed_repeats_all_generators():
    assert set_seed(1234) == 1234
    first = _draw()
    set_seed(1234)
    second = _draw()
    assert first[:3] == second[:3]
    torch.testing.assert_close(first[3], second[3], rtol=0, atol=0)
    set_seed(4321)
    assert _draw()[0] != first[0]


def test_set_seed_none_returns_a_usable_seed():
    seed = set_seed(None)
    assert isinstance(seed, int) and 0 <= seed < 2**32
    values = _draw()
    set_seed(seed)
    assert _draw()[:3] == values[:3]


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3"])
def test_set_seed_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="seed must be an int"):
        set_seed(bad)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    set_seed(7)
    _draw()
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    state = get_rng_state()
    expected = _draw()

    path = tmp_path / "rng.pt"
    torch.save({"rng_state": state}, path)
    loaded = torch.load(path, weights_only=True)["rng_state"]

    set_seed(99)  # move every generator somewhere else
    _draw()
    set_rng_state(loaded)
    actual = _draw()
    assert actual[:3] == expected[:3]
    torch.testing.assert_close(actual[3], expected[3], rtol=0, atol=0)


def test_set_rng_state_names_missing_entries():
    state = get_rng_state()
    del state["numpy"]
    with pytest.raises(KeyError, match="numpy"):
        set_rng_state(state)
