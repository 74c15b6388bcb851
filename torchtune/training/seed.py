"""Seeding and RNG state capture, so that runs repeat and resumed runs continue exactly."""

import logging
import os
import random
from typing import Any, Optional

import numpy as np
import torch

from torchtune._errors import UserValueError

log = logging.getLogger(__name__)

# numpy's legacy seeding accepts only unsigned 32-bit seeds.
_MAX_SEED = 2**32 - 1


def set_seed(seed: Optional[int] = None) -> int:
    """Seed python's ``random``, numpy and torch (all devices) with one value.

    Args:
        seed (Optional[int]): the seed, in ``[0, 2**32 - 1]``. ``None`` draws a random one
            from the operating system, so the run can still be repeated from the returned value.

    Returns:
        int: the seed used.

    Raises:
        ValueError: if ``seed`` is outside ``[0, 2**32 - 1]``.

    Example:
        >>> seed = set_seed(42)
        >>> torch.rand(1)  # the same on every run
    """
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
        raise UserValueError(f"seed must be an int in [0, {_MAX_SEED}], got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    log.debug("Random seed set to %d", seed)
    return seed


def get_rng_state() -> dict[str, Any]:
    """Capture the python, numpy and torch (and CUDA, if available) RNG states.

    The result holds only tensors and plain Python values, so a checkpoint containing it
    loads with ``torch.load(..., weights_only=True)``.

    Returns:
        dict[str, Any]: ``{"python": tuple, "numpy": dict, "torch": ByteTensor}`` plus
        ``"cuda": list[ByteTensor]`` when CUDA is available.
    """
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": (version, tuple(internal), gauss_next),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            # uint32 key as int64: weights_only cannot unpickle numpy arrays.
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`get_rng_state`.

    Args:
        state (dict[str, Any]): the dict returned by :func:`get_rng_state`, possibly after a
            ``torch.save`` / ``torch.load`` round trip.

    Raises:
        KeyError: if ``state`` lacks one of the ``"python"``, ``"numpy"`` or ``"torch"`` entries.
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise KeyError(f"rng state is missing {missing}; expected the dict from get_rng_state()")
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    key = np_state["key"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": key.astype(np.uint32), "pos": int(np_state["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) != torch.cuda.device_count():
            log.warning(
                "rng state has %d CUDA generators but %d devices are visible; "
                "restoring the overlap",
                len(cuda_states),
                torch.cuda.device_count(),
            )
        for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device=i)
