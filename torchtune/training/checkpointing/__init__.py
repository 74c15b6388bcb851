"""Checkpointers: Meta, HF and torchtune formats in; the same format out; resume state.

``torchtune.utils`` re-exports the checkpointers and ``ModelType`` under the dotted paths
that published configs name (``torchtune.utils.FullModelHFCheckpointer``).
"""

from torchtune.training.checkpointing._checkpointer import (
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)
from torchtune.training.checkpointing._hf_checkpointer import FullModelHFCheckpointer
from torchtune.training.checkpointing._overwrite_guard import input_files_in_config
from torchtune.training.checkpointing._utils import (
    ADAPTER_CONFIG_KEY,
    ADAPTER_KEY,
    EPOCHS_KEY,
    LR_SCHEDULER_KEY,
    MANIFEST_NAME,
    MAX_STEPS_KEY,
    MODEL_KEY,
    OPT_KEY,
    RECIPE_STATE_NAME,
    RNG_KEY,
    MANIFEST_KEY,
    SAVE_ID_KEY,
    SEED_KEY,
    STEPS_KEY,
    TOTAL_EPOCHS_KEY,
    ModelType,
    check_resume_matches,
    validate_state_dict,
)

__all__ = [
    "ADAPTER_CONFIG_KEY",
    "ADAPTER_KEY",
    "EPOCHS_KEY",
    "FullModelHFCheckpointer",
    "FullModelMetaCheckpointer",
    "FullModelTorchTuneCheckpointer",
    "LR_SCHEDULER_KEY",
    "MANIFEST_NAME",
    "MAX_STEPS_KEY",
    "MODEL_KEY",
    "ModelType",
    "OPT_KEY",
    "RECIPE_STATE_NAME",
    "RNG_KEY",
    "MANIFEST_KEY",
    "SAVE_ID_KEY",
    "SEED_KEY",
    "STEPS_KEY",
    "TOTAL_EPOCHS_KEY",
    "check_resume_matches",
    "input_files_in_config",
    "validate_state_dict",
]
