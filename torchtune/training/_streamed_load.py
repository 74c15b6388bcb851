"""Loading a model from a streamed checkpoint, one decoder layer at a time.

``checkpointer.load_checkpoint(stream_model=True)["model"]`` yields the model's state dict
in groups (``layer_groups``), read from disk only when asked for. Loading each group and
dropping it before asking for the next keeps at most one layer of the file in memory beside
the model: with NF4 base weights (QLoRA), which quantize as they load, the peak while
loading is the 4-bit model plus one full-precision layer.
"""

from typing import Dict, Iterable, List, NamedTuple, Optional

import torch
from torch import nn

from torchtune.training.checkpointing._utils import check_shapes


class GroupedLoad(NamedTuple):
    """What ``nn.Module.load_state_dict(strict=False)`` returns for the whole checkpoint,
    and the dtype of its first floating tensor (the dtype the input was saved in)."""

    missing_keys: List[str]
    unexpected_keys: List[str]
    dtype: Optional[torch.dtype]


def load_state_dict_in_groups(model: nn.Module, groups: Iterable[Dict[str, torch.Tensor]]) -> GroupedLoad:
    """``model.load_state_dict(state_dict, strict=False)`` for a state dict given in groups.

    Args:
        model (nn.Module): the model to load into.
        groups (Iterable[Dict[str, torch.Tensor]]): the state dict in parts, e.g.
            ``load_checkpoint(stream_model=True)["model"]``; each part is released before
            the next is asked for.

    Returns:
        GroupedLoad: a key is missing when no group had it; unexpected when a group had it
        and the model does not.

    Raises:
        UserValueError: a group's tensor has another shape than the model's, before the
            group is loaded (naming the tensor and both shapes).
    """
    expected = {k: v for k, v in model.state_dict().items()}  # shapes to check each group against
    missing: Optional[List[str]] = None  # in the model's order, as load_state_dict gives it
    unexpected: List[str] = []
    dtype: Optional[torch.dtype] = None
    for group in groups:
        if dtype is None:
            dtype = next((v.dtype for v in group.values() if v.is_floating_point()), None)
        # One line naming the tensor and both shapes, not torch's "size mismatch" traceback.
        check_shapes(expected, group)
        result = model.load_state_dict(group, strict=False)
        unexpected.extend(result.unexpected_keys)
        if missing is None:
            missing = list(result.missing_keys)
        else:
            still = set(result.missing_keys)
            missing = [k for k in missing if k in still]
        del group, result  # before the next group is read
    if missing is None:  # no group at all
        missing = list(model.load_state_dict({}, strict=False).missing_keys)
    return GroupedLoad(missing, unexpected, dtype)
