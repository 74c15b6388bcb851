"""Model types, state-dict validation and resume checks shared by the checkpointers."""

import importlib
from dataclasses import dataclass
from enum import Enum
from types import ModuleType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from torchtune._errors import UserValueError

# Recipe-state keys (docs/design.md). The checkpointers pass every key through unchanged;
# these names are listed so recipes and tests agree on spelling.
MODEL_KEY = "model"
ADAPTER_KEY = "adapter"
ADAPTER_CONFIG_KEY = "adapter_config"
SEED_KEY = "seed"
EPOCHS_KEY = "epochs_run"
TOTAL_EPOCHS_KEY = "total_epochs"
MAX_STEPS_KEY = "max_steps_per_epoch"
STEPS_KEY = "steps_run"
OPT_KEY = "optimizer"
LR_SCHEDULER_KEY = "lr_scheduler"
RNG_KEY = "rng_state"
# Added by the checkpointer to the recipe state it writes (and removed when it loads it):
# the id of the save that wrote it, and that save's manifest (the files it pairs with).
SAVE_ID_KEY = "checkpoint_save_id"
MANIFEST_KEY = "checkpoint_manifest"

RECIPE_STATE_NAME = "recipe_state.pt"
MANIFEST_NAME = "checkpoint_manifest.json"
# How a save formats "{epoch}" and "{step}" in a name: a plain int, never "01".
NUMBER_RE = r"(?:0|[1-9][0-9]*)"


class ModelType(Enum):
    """Model families the checkpointers can convert. Configs pass the name: ``LLAMA2``.

    ``LLAMA3`` covers Llama 3 and 3.1 (untied output projection); ``LLAMA3_2`` the Llama 3.2
    text models (1B, 3B), whose output projection is tied to the token embedding.
    ``QWEN2`` covers Qwen 2 and 2.5, ``QWEN3`` Qwen 3 (text); both HF-format only, tied or
    not as each checkpoint's config.json says. ``MISTRAL``: Mistral 7B and its kin (HF, or
    Mistral's own ``consolidated`` files in the Meta checkpointer). ``REWARD``: a Llama or
    Mistral decoder with a classification head (transformers' ``*ForSequenceClassification``,
    a reward or value model), HF format only. ``PHI3_MINI`` (0.6.1's name): Phi-3, whose
    files fuse q/k/v and gate/up, HF format only; ``PHI4`` the same for Phi-4. ``GEMMA``,
    ``GEMMA2``, ``GEMMA3``: Gemma's three generations, HF format only, tied output; a
    ``GEMMA3`` folder may be a multimodal 4B-27B checkpoint, whose text decoder is read and
    whose other tensors are carried through unchanged. ``QWEN3_MOE``: Qwen 3 MoE, HF format,
    one tensor per expert in the files, stacked in the model; ``MIXTRAL`` likewise.
    """

    LLAMA2 = "llama2"
    LLAMA3 = "llama3"
    LLAMA3_2 = "llama3_2"
    QWEN2 = "qwen2"
    QWEN3 = "qwen3"
    MISTRAL = "mistral"
    REWARD = "reward"
    PHI3_MINI = "phi3_mini"
    PHI4 = "phi4"
    GEMMA = "gemma"
    GEMMA2 = "gemma2"
    GEMMA3 = "gemma3"
    QWEN3_MOE = "qwen3_moe"
    MIXTRAL = "mixtral"

    @classmethod
    def coerce(cls, value: Union["ModelType", str]) -> "ModelType":
        """Accept a ``ModelType``, its name (``"LLAMA2"``) or its value (``"llama2"``)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if value.upper() == member.name or value.lower() == member.value:
                    return member
        raise UserValueError(
            f"Unknown model_type {value!r}; expected one of {[m.name for m in cls]}"
        )


@dataclass(frozen=True)
class ModelTypeInfo:
    """What the checkpointers need to know about a model family.

    Attributes:
        converter (str): module with ``meta_to_tune``/``tune_to_meta``/``hf_to_tune``/
            ``tune_to_hf`` (and the peft adapter maps); each family keeps its key maps next
            to its model code.
        hf_model_types (Tuple[str, ...]): the ``"model_type"`` values transformers writes in
            config.json for the family.
        tied_embeddings (Optional[bool]): the output projection is the token embedding: the
            internal state dict has ``tok_embeddings.weight`` and no ``output.weight``.
            ``None``: the family has tied and untied sizes, and each checkpoint's
            config.json ``tie_word_embeddings`` decides (HF checkpointer only; absent means
            untied).
        meta_format (bool): the family has a Meta-format checkpoint
            (``FullModelMetaCheckpointer`` refuses the type otherwise).
    """

    converter: str
    hf_model_types: Tuple[str, ...]
    tied_embeddings: Optional[bool] = False
    meta_format: bool = True


# The one table: adding a family is a row here plus its converter module.
MODEL_TYPES: Dict[ModelType, ModelTypeInfo] = {
    ModelType.LLAMA2: ModelTypeInfo("torchtune.models.llama2._convert_weights", ("llama",)),
    ModelType.LLAMA3: ModelTypeInfo("torchtune.models.llama3._convert_weights", ("llama",)),
    ModelType.LLAMA3_2: ModelTypeInfo(
        "torchtune.models.llama3._convert_weights", ("llama",), tied_embeddings=True
    ),
    ModelType.QWEN2: ModelTypeInfo(
        "torchtune.models.qwen2._convert_weights", ("qwen2",), tied_embeddings=None,
        meta_format=False,
    ),
    ModelType.QWEN3: ModelTypeInfo(
        "torchtune.models.qwen3._convert_weights", ("qwen3",), tied_embeddings=None,
        meta_format=False,
    ),
    ModelType.MISTRAL: ModelTypeInfo(
        "torchtune.models.mistral._convert_weights", ("mistral",), tied_embeddings=None,
    ),
    ModelType.REWARD: ModelTypeInfo(
        "torchtune.rlhf.utils._convert_weights", ("mistral", "llama"), meta_format=False,
    ),
    ModelType.PHI3_MINI: ModelTypeInfo(
        "torchtune.models.phi3._convert_weights", ("phi3",), tied_embeddings=None, meta_format=False,
    ),
    ModelType.PHI4: ModelTypeInfo(
        "torchtune.models.phi3._convert_weights", ("phi3",), tied_embeddings=None, meta_format=False,
    ),
    ModelType.GEMMA: ModelTypeInfo(
        "torchtune.models.gemma._convert_weights", ("gemma",), tied_embeddings=True, meta_format=False,
    ),
    ModelType.GEMMA2: ModelTypeInfo(
        "torchtune.models.gemma2._convert_weights", ("gemma2",), tied_embeddings=True, meta_format=False,
    ),
    ModelType.GEMMA3: ModelTypeInfo(
        "torchtune.models.gemma3._convert_weights", ("gemma3_text", "gemma3"), tied_embeddings=True,
        meta_format=False,
    ),
    ModelType.QWEN3_MOE: ModelTypeInfo(
        "torchtune.models.qwen3_moe._convert_weights", ("qwen3_moe",), tied_embeddings=None,
        meta_format=False,
    ),
    ModelType.MIXTRAL: ModelTypeInfo(
        "torchtune.models.mixtral._convert_weights", ("mixtral",), meta_format=False,
    ),
}

# The "model_type" written by transformers in config.json for each family.
HF_MODEL_TYPES = {t: info.hf_model_types for t, info in MODEL_TYPES.items()}


def get_converter(model_type: ModelType) -> ModuleType:
    """Module with ``meta_to_tune``/``tune_to_meta``/``hf_to_tune``/``tune_to_hf`` for a type."""
    return importlib.import_module(MODEL_TYPES[model_type].converter)


def _shapes(obj: Union[nn.Module, Mapping[str, Any]]) -> Dict[str, tuple]:
    sd = obj.state_dict() if isinstance(obj, nn.Module) else obj
    return {k: tuple(v.shape) for k, v in sd.items()}


def validate_state_dict(
    model: Union[nn.Module, Mapping[str, torch.Tensor]],
    state_dict: Mapping[str, torch.Tensor],
    *,
    ignore_missing: Optional[Callable[[str], bool]] = None,
    source: str = "checkpoint",
) -> None:
    """Check that ``state_dict`` fits ``model`` exactly, before ``load_state_dict``.

    Args:
        model (Union[nn.Module, Mapping[str, torch.Tensor]]): the model, or its state dict.
        state_dict (Mapping[str, torch.Tensor]): the weights about to be loaded.
        ignore_missing (Optional[Callable[[str], bool]]): names for which being absent from
            ``state_dict`` is fine; e.g. ``lambda k: "lora_" in k`` when loading a base
            checkpoint into a LoRA model.
        source (str): what ``state_dict`` came from, for the error message.

    Raises:
        UserValueError: listing the unexpected names, the missing names, and every shape
            mismatch as ``name: checkpoint (a, b) vs model (c, d)``.

    Example:
        >>> validate_state_dict(model, ckpt["model"], ignore_missing=lambda k: "lora_" in k)
        >>> model.load_state_dict(ckpt["model"], strict=False, assign=True)
    """
    expected = _shapes(model)
    got = _shapes(state_dict)
    unexpected = [k for k in got if k not in expected]
    missing = [k for k in expected if k not in got and not (ignore_missing and ignore_missing(k))]
    mismatched = [
        f"{k}: {source} {got[k]} vs model {expected[k]}"
        for k in got
        if k in expected and got[k] != expected[k]
    ]
    problems = []
    if unexpected:
        problems.append(f"unexpected tensors {_head(unexpected)}")
    if missing:
        problems.append(f"missing tensors {_head(missing)}")
    if mismatched:
        problems.append(f"shape mismatches {_head(mismatched)}")
    if problems:
        raise UserValueError(f"The {source} does not fit the model: " + "; ".join(problems))


def check_shapes(
    model: Union[nn.Module, Mapping[str, Any]], state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Refuse tensors of ``state_dict`` whose shapes differ from the model's same-named ones
    (names the model lacks, or lacks in ``state_dict``, are for the caller to judge).

    Raises:
        UserValueError: every mismatch as ``name: checkpoint (a, b) vs model (c, d)``.
    """
    expected = _shapes(model)
    mismatched = [
        f"{k}: {source} {tuple(v.shape)} vs model {expected[k]}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if mismatched:
        raise UserValueError(f"The {source} does not fit the model: shape mismatches {_head(mismatched)}")


def _head(items: list, n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"


def check_resume_matches(
    saved_state: Mapping[str, Any], current: Mapping[str, Any], source: str = "recipe_state.pt"
) -> None:
    """Fail if the config contradicts the saved recipe state.

    Args:
        saved_state (Mapping[str, Any]): the recipe state loaded from the checkpoint.
        current (Mapping[str, Any]): the values the config asks for now, e.g.
            ``{"seed": cfg.seed, "total_epochs": cfg.epochs, "batch_size": cfg.batch_size}``.
        source (str): where ``saved_state`` came from, for the message.

    Raises:
        UserValueError: naming the first key whose values differ (both values), or a key the
            saved state lacks.

    Example:
        >>> check_resume_matches({"seed": 1}, {"seed": 2})
        Traceback (most recent call last):
        ...
        torchtune._errors.UserValueError: Cannot resume: config seed=2 but recipe_state.pt has seed=1
    """
    for key, value in current.items():
        if key not in saved_state:
            raise UserValueError(
                f"Cannot resume: {source} has no {key!r} to compare with config "
                f"{key}={value!r} (keys there: {sorted(saved_state)})"
            )
        if saved_state[key] != value:
            raise UserValueError(
                f"Cannot resume: config {key}={value!r} but {source} has "
                f"{key}={saved_state[key]!r}"
            )
