"""Helpers for the distributed recipes: the process group, FSDP2 sharding and full state dicts.

The recipes run under torchrun (``tune run --nproc_per_node N ...``), which sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address in the environment. Parameters are
sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) one decoder layer at a time, so
each rank holds ``1 / world_size`` of every weight, gradient and optimizer state, and gathers
one layer's full weights only while that layer runs.

Checkpoints stay in the single-device formats: saving gathers full tensors on rank 0 (every
rank must call the gather), loading broadcasts rank 0's full tensors and keeps each rank's
shard (an NF4 weight travels as the parts of rank 0's NF4 tensor, since no collective runs
on an ``NF4Tensor`` itself). Optimizer states are converted to and from the
layout of ``Optimizer.state_dict()`` (parameters numbered in ``param_groups`` order), which
is what single-device recipes write.
"""

import logging
import os
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from torchtune._errors import UserError, UserValueError
from torchtune.utils._device import get_device
from torchtune.modules.low_precision import NF4_BLOCK, dequantize, is_nf4, nf4_parts, to_nf4

log = logging.getLogger(__name__)

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
    device = get_device(device)  # "auto" is the GPU where there is one
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise UserValueError(f"device: distributed training supports cpu (gloo) and cuda (nccl), got {device.type!r}")


def init_distributed(device: str) -> torch.device:
    """Join the process group that torchrun set up, with the backend chosen from ``device``.

    Args:
        device (str): ``"auto"``, ``"cpu"`` or ``"cuda"``; with CUDA each process takes the
            GPU of its ``LOCAL_RANK``.

    Returns:
        torch.device: this process's device (e.g. ``cuda:3``).

    Raises:
        RuntimeError: if the process was not started by torchrun.
    """
    missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR") if k not in os.environ]
    if missing:
        raise UserError(f"This recipe runs one process per rank: {_LAUNCH_HINT}; {missing[0]} is not set")
    device = get_device(device)  # "auto" is the GPU where there is one
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for_device(device))
    return device


def shard_model(
    model: nn.Module,
    device: torch.device,
    *,
    reshard_after_forward: bool = True,
    custom_sharded_layers: Optional[Sequence[str]] = None,
    cpu_offload: bool = False,
) -> nn.Module:
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
        custom_sharded_layers (Optional[Sequence[str]]): names of further modules (matched
            by their last name component, e.g. ``tok_embeddings``, ``output``) that become
            FSDP units of their own, so their large weights are gathered only while they run.
        cpu_offload (bool): keep the sharded parameters, gradients and optimizer state in
            CPU memory (FSDP2 ``CPUOffloadPolicy``); a no-op when ``device`` is the CPU.

    Raises:
        UserValueError: if a name in ``custom_sharded_layers`` matches no module.

    Returns:
        nn.Module: ``model`` itself, now an ``FSDPModule`` with DTensor parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    world_size, _ = get_world_size_and_rank()
    device_type = torch.device(device).type
    mesh = init_device_mesh(device_type, (world_size,))
    options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if cpu_offload and device_type != "cpu":
        from torch.distributed.fsdp import CPUOffloadPolicy

        options["offload_policy"] = CPUOffloadPolicy()
    elif cpu_offload:
        log.info("fsdp_cpu_offload: the model already lives in CPU memory; nothing to offload")
    for name in custom_sharded_layers or ():
        matches = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == name]
        if not matches:
            raise UserValueError(f"custom_sharded_layers: no module named '{name}' in the model")
        for module in matches:
            if next(module.parameters(recurse=False), None) is not None:  # a tied output has none
                fully_shard(module, **options)
    for layer in model.layers:
        fully_shard(layer, **options)
    # The root unit (embedding, final norm, output) stays gathered from its forward to its
    # backward, which needs it next anyway. It must: a fused loss (LinearCrossEntropyLoss)
    # applies the output projection after the model's forward has returned, and FSDP2
    # reshards a root given an explicit reshard_after_forward=True.
    fully_shard(model, **{**options, "reshard_after_forward": False})
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

    Every rank must call it: each all-gathers its shards, one tensor at a time. NF4 shards
    (QLoRA) are dequantized before the gather (no collective runs on an ``NF4Tensor``), so
    the result holds plain tensors in the weights' nominal dtype.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.tensor import DTensor

    state = model.state_dict()
    if not any(isinstance(v, DTensor) and is_nf4(v.to_local()) for v in state.values()):
        return get_model_state_dict(model, options=_full_options(cpu_offload=True))
    rank_zero = is_rank_zero()
    out = {}
    for name, value in state.items():
        if isinstance(value, DTensor):
            # NF4 blocks never straddle a shard (check_nf4_shardable), so dequantizing a shard
            # gives exactly its rows of the dequantized whole.
            local = dequantize(value.to_local())
            value = DTensor.from_local(
                local, value.device_mesh, value.placements, shape=value.shape, stride=value.stride()
            ).full_tensor()
        if rank_zero:
            out[name] = value.detach().cpu()
    return out


def load_full_model_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load rank 0's full ``state_dict`` into a sharded model; other ranks pass ``{}``.

    Rank 0 broadcasts one tensor at a time and each rank keeps its own shard, so only rank 0
    needs to read the checkpoint files. Every key of the model must be present (strict).
    A model with NF4 weights (QLoRA) is loaded by ``_load_sharded_with_nf4``.
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    if any(is_nf4(_local(p)) for p in model.parameters()):
        _load_sharded_with_nf4(model, state_dict)
        return
    set_model_state_dict(model, state_dict, options=_full_options(broadcast_from_rank0=True))


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def _load_sharded_with_nf4(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """``load_full_model_state_dict`` for a sharded model with NF4 weights (QLoRA), which may
    still be on the meta device (``to_empty`` cannot allocate NF4): every parameter is
    replaced by a new one.

    An NF4 weight travels as NF4: rank 0 quantizes it (unless ``state_dict`` already holds
    it quantized, as the LoRA recipe's rank-0 model does), each rank builds an NF4 tensor of
    the same shape and receives every part of rank 0's into it (no collective runs on an
    ``NF4Tensor`` itself), then keeps its dim-0 shard (an NF4 tensor splits exactly on
    16384-value boundaries; see ``check_nf4_shardable``). So every rank holds the codes
    rank 0 computed, a quarter of the bytes of the full-precision weight cross the wire, and
    at most one weight exists in full per rank at a time. Other tensors are broadcast as
    they are.
    """
    from torch.distributed.tensor import DTensor

    world_size, rank = get_world_size_and_rank()
    params = dict(model.named_parameters())
    mesh_type = next(p.device_mesh.device_type for p in params.values() if isinstance(p, DTensor))
    device = torch.device("cuda", torch.cuda.current_device()) if mesh_type == "cuda" else torch.device(mesh_type)
    for name, current in model.state_dict().items():
        if rank == 0 and name not in state_dict:
            raise ValueError(f"load_full_model_state_dict: {name!r} is missing")
        quantized = isinstance(current, DTensor) and is_nf4(current.to_local())
        if quantized:
            # A template of the right layout (ones: a zero block has no scale); every part
            # is overwritten by rank 0's.
            value = to_nf4(torch.ones(current.shape, dtype=current.dtype, device=device))
            if rank == 0:
                source = state_dict[name]
                if not is_nf4(source):
                    source = to_nf4(source.to(dtype=current.dtype))
                for mine, theirs in zip(nf4_parts(value), nf4_parts(source)):
                    mine.copy_(theirs)
            for part in nf4_parts(value):
                dist.broadcast(part, src=0)
        elif rank == 0:
            value = state_dict[name].to(device=device, dtype=current.dtype)
            dist.broadcast(value, src=0)
        else:
            value = torch.empty(current.shape, dtype=current.dtype, device=device)
            dist.broadcast(value, src=0)
        if isinstance(current, DTensor):
            chunks = list(torch.chunk(value, world_size, dim=0))
            if rank < len(chunks):
                shard = chunks[rank] if quantized else chunks[rank].clone()  # own storage
            else:  # fewer rows than ranks: this rank's shard is empty
                shard = value.new_empty((0, *value.shape[1:]))
            new = DTensor.from_local(
                shard, current.device_mesh, current.placements, shape=current.shape, stride=current.stride()
            )
        else:
            new = value
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if name in params:
            setattr(module, attr, nn.Parameter(new, requires_grad=params[name].requires_grad))
        else:
            module._buffers[attr] = new
        del value, new


def check_nf4_shardable(model: nn.Module, world_size: int) -> None:
    """Refuse a QLoRA model whose NF4 weights FSDP2 cannot shard over ``world_size`` ranks.

    FSDP2 splits each weight along dim 0; an NF4 weight splits only into equal shards whose
    sizes are multiples of its 16384-value block layout (64-value blocks, 256 scalers each).

    Raises:
        UserValueError: naming the first weight that does not split.
    """
    for name, param in model.named_parameters():
        if not is_nf4(param):
            continue
        rows, numel = param.shape[0], param.numel()
        if rows % world_size or (numel // world_size) % NF4_BLOCK:
            raise UserValueError(
                f"QLoRA on {world_size} processes: the NF4 weight {name!r} {list(param.shape)} does "
                f"not split along dim 0 into {world_size} shards of a multiple of {NF4_BLOCK} values; "
                "use a number of processes that divides it so"
            )


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
