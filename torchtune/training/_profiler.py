"""`torch.profiler` for the training loop, configured from the ``profiler`` config node.

torchtune 0.6.1's configs carry this block; it works here unchanged::

    profiler:
      _component_: torchtune.training.setup_torch_profiler
      enabled: True
      output_dir: ${output_dir}/profiling_outputs
      wait_steps: 5
      warmup_steps: 3
      active_steps: 2
      num_cycles: 1

The recipe enters the returned profiler around its loop and calls ``step()`` after each
optimizer step. Each finished cycle writes a Chrome trace (open it in
https://ui.perfetto.dev or chrome://tracing) and a table of the slowest operators to
``output_dir/iteration_<step>/``.
"""

import logging
from pathlib import Path
from typing import Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from torchtune._errors import UserValueError
from torchtune.training._output_files import check_output_folder, write_text_atomically

log = logging.getLogger(__name__)

_DEFAULT_SCHEDULE = {"wait_steps": 5, "warmup_steps": 3, "active_steps": 2, "num_cycles": 1}


class DummyProfiler:
    """What ``setup_torch_profiler(enabled=False)`` returns: a context whose ``step`` does
    nothing, so the loop reads the same with the profiler on or off."""

    def __enter__(self) -> "DummyProfiler":
        return self

    def __exit__(self, *args) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def step(self) -> None:
        pass


def _trace_handler(output_dir: Path, rank: int, sort_by: str):
    def on_trace_ready(prof: torch.profiler.profile) -> None:
        from torchtune.training.checkpointing import _io

        folder = output_dir / f"iteration_{prof.step_num}"
        check_output_folder(str(folder), "profiler.output_dir")
        folder.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a symlink at either name is replaced, never followed.
        with _io.atomic_path(str(folder / f"rank{rank}_trace.json")) as tmp:
            prof.export_chrome_trace(tmp)
        table = prof.key_averages().table(sort_by=sort_by, row_limit=50)
        write_text_atomically(str(folder / f"rank{rank}_key_averages.txt"), table + "\n")
        log.info("Profiler trace written to %s", folder)

    return on_trace_ready


def setup_torch_profiler(
    enabled: bool = False,
    cpu: bool = True,
    cuda: bool = True,
    xpu: bool = True,
    profile_memory: bool = False,
    with_stack: bool = False,
    record_shapes: bool = True,
    with_flops: bool = False,
    wait_steps: Optional[int] = None,
    warmup_steps: Optional[int] = None,
    active_steps: Optional[int] = None,
    num_cycles: Optional[int] = None,
    output_dir: Optional[str] = None,
) -> tuple[Union[torch.profiler.profile, DummyProfiler], DictConfig]:
    """Build a ``torch.profiler.profile`` (or a :class:`DummyProfiler` when disabled).

    Activities that this machine lacks (``cuda`` without a GPU) are dropped. Schedule
    values left out take 0.6.1's defaults (wait 5, warmup 3, active 2, one cycle).

    Args:
        enabled (bool): profile at all.
        cpu (bool): record CPU activity.
        cuda (bool): record CUDA kernels (when CUDA is available).
        xpu (bool): record XPU kernels (when an XPU is available).
        profile_memory (bool): record tensor allocations.
        with_stack (bool): record Python stacks (large traces).
        record_shapes (bool): record operator input shapes.
        with_flops (bool): estimate FLOPs of matmuls and convolutions.
        wait_steps (Optional[int]): steps to skip at the start of each cycle.
        warmup_steps (Optional[int]): steps traced but discarded (tracer warm-up).
        active_steps (Optional[int]): steps recorded.
        num_cycles (Optional[int]): how many wait/warmup/active cycles.
        output_dir (Optional[str]): where traces go; required when enabled.

    Returns:
        tuple: the profiler, and the settings it was built with (a DictConfig, as 0.6.1
        returned them).

    Raises:
        UserValueError: if enabled without ``output_dir``, with no activity to record, or
            with a non-positive ``active_steps``.
    """
    schedule = {
        "wait_steps": wait_steps, "warmup_steps": warmup_steps,
        "active_steps": active_steps, "num_cycles": num_cycles,
    }
    schedule = {k: (_DEFAULT_SCHEDULE[k] if v is None else v) for k, v in schedule.items()}
    activities = []
    if cpu:
        activities.append(torch.profiler.ProfilerActivity.CPU)
    if cuda and torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    if xpu and hasattr(torch, "xpu") and torch.xpu.is_available():
        activities.append(torch.profiler.ProfilerActivity.XPU)
    settings = OmegaConf.create({
        "enabled": enabled, "output_dir": output_dir, "cpu": cpu, "cuda": cuda, "xpu": xpu,
        "profile_memory": profile_memory, "with_stack": with_stack,
        "record_shapes": record_shapes, "with_flops": with_flops, **schedule,
    })
    if not enabled:
        return DummyProfiler(), settings
    if output_dir is None:
        raise UserValueError("profiler.output_dir: required when profiler.enabled is True")
    if not activities:
        raise UserValueError("profiler: no activity to record (set profiler.cpu: True, or cuda on a GPU)")
    if schedule["active_steps"] < 1 or min(schedule.values()) < 0:
        raise UserValueError(f"profiler: active_steps must be >= 1 and the other steps >= 0, got {dict(schedule)}")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    on_cuda = torch.profiler.ProfilerActivity.CUDA in activities
    profiler = torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(
            wait=schedule["wait_steps"], warmup=schedule["warmup_steps"],
            active=schedule["active_steps"], repeat=schedule["num_cycles"],
        ),
        on_trace_ready=_trace_handler(
            Path(output_dir), rank, "cuda_time_total" if on_cuda else "cpu_time_total"
        ),
        profile_memory=profile_memory,
        with_stack=with_stack,
        record_shapes=record_shapes,
        with_flops=with_flops,
    )
    return profiler, settings
