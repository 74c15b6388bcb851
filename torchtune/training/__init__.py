"""Helpers that recipes share: seeding, precision, lr schedules, gradient scaling, the
optimizer step in backward, activation offloading, the profiler, CPU heap hygiene, memory
readings, metric loggers and the output-folder lock.
Checkpointers live in ``torchtune.training.checkpointing``; torchtune 0.6.1's configs name
them ``torchtune.training.FullModelHFCheckpointer`` (and Meta, TorchTune), which resolve
here on first access to the same classes.
"""

from torchtune.training._distributed import (
    backend_for_device,
    check_nf4_shardable,
    gather_full_model_state_dict,
    gather_full_optimizer_state_dict,
    get_world_size_and_rank,
    init_distributed,
    is_rank_zero,
    load_full_model_state_dict,
    load_full_optimizer_state_dict,
    shard_model,
)
from torchtune.training._activation_offloading import get_act_offloading_ctx_manager
from torchtune.training._cpu_heap import activations_in_own_pages
from torchtune.training._grad_scaler import scale_grads_
from torchtune.training._interrupt import interrupted_note
from torchtune.training._model_checks import (
    check_attention_layout,
    check_checkpoint_fits,
    check_model_against_checkpoint,
    tie_like_checkpoint,
)
from torchtune.training._optimizer_in_backward import OptimizerInBackward
from torchtune.training._output_files import check_output_folder, write_text_atomically
from torchtune.training._output_lock import OutputDirLock
from torchtune.training._profiler import DummyProfiler, setup_torch_profiler
from torchtune.training._streamed_load import GroupedLoad, load_state_dict_in_groups
from torchtune.training.lr_schedulers import get_cosine_schedule_with_warmup
from torchtune.training.memory import format_memory_stats, get_memory_stats
from torchtune.training.precision import get_dtype, is_bf16_supported, set_default_dtype
from torchtune.training.seed import get_rng_state, set_rng_state, set_seed

__all__ = [
    "DummyProfiler",
    "OptimizerInBackward",
    "OutputDirLock",
    "activations_in_own_pages",
    "check_attention_layout",
    "check_checkpoint_fits",
    "check_model_against_checkpoint",
    "check_output_folder",
    "write_text_atomically",
    "GroupedLoad",
    "load_state_dict_in_groups",
    "backend_for_device",
    "gather_full_model_state_dict",
    "gather_full_optimizer_state_dict",
    "get_act_offloading_ctx_manager",
    "get_world_size_and_rank",
    "interrupted_note",
    "init_distributed",
    "check_nf4_shardable",
    "is_rank_zero",
    "load_full_model_state_dict",
    "load_full_optimizer_state_dict",
    "shard_model",
    "format_memory_stats",
    "get_cosine_schedule_with_warmup",
    "get_dtype",
    "get_memory_stats",
    "get_rng_state",
    "is_bf16_supported",
    "scale_grads_",
    "set_default_dtype",
    "set_rng_state",
    "set_seed",
    "tie_like_checkpoint",
    "setup_torch_profiler",
]

# torchtune 0.6.1's dotted paths for the checkpointers (canonical home: .checkpointing).
_CHECKPOINTER_NAMES = (
    "FullModelHFCheckpointer",
    "FullModelMetaCheckpointer",
    "FullModelTorchTuneCheckpointer",
)
__all__ += list(_CHECKPOINTER_NAMES)


def __getattr__(name: str):
    # Imported on first use: the checkpointers pull in safetensors and the family key maps.
    if name in _CHECKPOINTER_NAMES:
        from torchtune.training import checkpointing

        return getattr(checkpointing, name)
    raise AttributeError(f"module 'torchtune.training' has no attribute '{name}'")
