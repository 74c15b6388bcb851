"""Helpers for the distributed recipes: the process group, FSDP2 sharding and full state dicts.

The recipes run under torchrun (``tune run --nproc_per_node N ...``), which sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address in the environment. Parameters are
sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) one decoder layer at a time, so
each rank holds ``1 / world_size`` of every weight, gradient and optimizer state, and gathers
one layer's full weights only while that layer runs.

Checkpoints stay in the single-device formats: saving gathers full tensors on rank 0 (every
rank must call the gather), loading broadcasts rank 0's full tensors and keeps each rank's
shard. Optimizer states are converted to and from the layout of ``Optimizer.state_dict()``
(parameters numbered in ``param_groups`` order), which is what single-device recipes write.
"""

import os
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from torchtune._errors import UserError, UserValueError

_LAUNCH_HINT = "launch it with `tune run --nproc_per_node N RECIPE --config CONFIG` (torchrun)"


def get_world_size_and_rank() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group, or ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def is_rank_zero() -> bool:
    """Whether this process logs and writes files: rank 0, or the only process."""
    return get_world_size_and_rank()[1] == 0


def backend_for_device(device: torch.device) -> str:
    """The collective backend for ``device``: NCCL for CUDA, gloo for CPU.

    Raises:
        ValueError: for any other device type.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise UserValueError(f"device: distributed training supports cpu (gloo) and cuda (nccl), got {device.type!r}")


def init_distributed(device: str) -> torch.device:
    """Join the process group that torchrun set up, with the backend chosen from ``device``.

    Args:
        device (str): ``"cpu"`` or ``"cuda"``; with CUDA each process takes the GPU of its
            ``LOCAL_RANK``.

    Returns:
        torch.device: this process's device (e.g. ``cuda:3``).

    Raises:
        RuntimeError: if the process was not started by torchrun.
    """
    missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR") if k not in os.environ]
    if missing:
        raise UserError(f"This recipe runs one process per rank: {_LAUNCH_HINT}; {missing[0]} is not set")
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for_device(device))
    return device


def shard_model(model: nn.Module, device: torch.device, *, reshard_after_forward: bool = True) -> nn.Module:
    """Shard ``model`` in place with FSDP2: each decoder layer, then the root.

    Each ``model.layers[i]`` becomes one FSDP unit, so a rank all-gathers one layer's weights
    just before it runs and frees them after; the root unit holds the embedding, final norm
    and output projection. Gradients are *summed* over ranks (not averaged): the recipes
    divide by the number of target tokens in the whole global batch, as a single-device run
    divides by the tokens of its batch.

    Args:
        model (nn.Module): a decoder with a ``layers`` ModuleList (on any device, or meta).
        device (torch.device): this rank's device; the mesh spans all ranks of its type.
        reshard_after_forward (bool): free gathered weights after each layer's forward
            (and gather again in backward); False keeps them, trading memory for traffic.

    Returns:
        nn.Module: ``model`` itself, now an ``FSDPModule`` with DTensor parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    world_size, _ = get_world_size_and_rank()
    mesh = init_device_mesh(torch.device(device).type, (world_size,))
    for layer in model.layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            # A plain SUM: gloo has no pre-multiplied sum.
            module.set_force_sum_reduction_for_comms(True)
    return model


def _full_options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def gather_full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) weights on rank 0's CPU; ``{}`` on the other ranks.

    Every rank must call it: each all-gathers its shards, one tensor at a time.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def load_full_model_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load rank 0's full ``state_dict`` into a sharded model; other ranks pass ``{}``.

    Rank 0 broadcasts one tensor at a time and each rank keeps its own shard, so only rank 0
    needs to read the checkpoint files. Every key of the model must be present (strict).
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state_dict, options=_full_options(broadcast_from_rank0=True))


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in ``param_groups`` order: position = saved id."""
    names = {p: n for n, p in model.named_parameters()}
    return [names[p] for group in optimizer.param_groups for p in group["params"]]


def gather_full_optimizer_state_dict(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Full optimizer state on rank 0, laid out like ``Optimizer.state_dict()``; ``{}`` elsewhere.

    Parameters are numbered 0, 1, ... in ``param_groups`` order, as ``Optimizer.state_dict()``
    numbers them, so a single-device recipe built over the same parameters loads it directly.
    Every rank must call it.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    if not by_name:
        return {}
    ids = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [ids[n] for n in g["params"]]} for g in by_name["param_groups"]]
    return {"state": {ids[n]: s for n, s in by_name["state"].items()}, "param_groups": groups}


def load_full_optimizer_state_dict(
    model: nn.Module, optimizer: torch.optim.Optimizer, state_dict: Optional[dict[str, Any]]
) -> None:
    """Load an ``Optimizer.state_dict()``-layout state into the optimizer of a sharded model.

    Rank 0 passes the full state (from either recipe's checkpoint), the other ranks ``None``
    or ``{}``; rank 0 broadcasts it and each rank keeps the shards of its parameters.

    Raises:
        ValueError: (rank 0) if the saved state numbers a different count of parameters.
    """
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    by_name: dict[str, Any] = {}
    if state_dict:
        names = _param_names(model, optimizer)
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        if len(saved) != len(names):
            raise UserValueError(
                f"The saved optimizer state covers {len(saved)} parameters but this optimizer "
                f"has {len(names)}: it was saved for another model or recipe"
            )
        by_name = {
            "state": {names[i]: s for i, s in state_dict["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state_dict["param_groups"]],
        }
    set_optimizer_state_dict(model, optimizer, by_name, options=_full_options(broadcast_from_rank0=True))
