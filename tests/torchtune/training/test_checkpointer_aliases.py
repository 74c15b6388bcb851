"""The dotted paths configs name for the checkpointers all build the one class."""

import pytest

from torchtune.config import resolve_component
from torchtune.training import checkpointing


@pytest.mark.parametrize("name", ["FullModelHFCheckpointer", "FullModelMetaCheckpointer",
                                  "FullModelTorchTuneCheckpointer"])
def test_training_utils_and_canonical_paths_are_one_class(name):
    canonical = getattr(checkpointing, name)
    assert resolve_component(f"torchtune.training.{name}") is canonical  # torchtune 0.6.1
    assert resolve_component(f"torchtune.utils.{name}") is canonical  # the seed's configs


def test_unknown_training_attribute_is_still_an_error():
    import torchtune.training

    with pytest.raises(AttributeError, match="NoSuchCheckpointer"):
        torchtune.training.NoSuchCheckpointer
