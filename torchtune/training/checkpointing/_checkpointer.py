"""Checkpointers for Meta's ``consolidated.00.pth`` layout and torchtune's internal layout.

See ``_core`` for what a save writes and the shared load/save contract.
"""

import os
from typing import Any, Dict, List, Optional, Union

import torch

from torchtune._errors import UserValueError
from torchtune.training.checkpointing import _io, _sidecars
from torchtune.training.checkpointing._core import CheckpointerCore, as_tensor_dict
from torchtune.training.checkpointing._overwrite_guard import OutputLayout
from torchtune.training.checkpointing._save_writer import SaveWriter
from torchtune.training.checkpointing._utils import MODEL_KEY, NUMBER_RE, ModelType


# Beside the weights so llama.cpp's converter accepts the output folder.
_META_EXTRA_FILES = ("params.json", "tokenizer.model")


class FullModelMetaCheckpointer:
    """Read and write Meta's ``consolidated.00.pth`` layout (meta-llama/llama).

    ``params.json`` beside the checkpoint is read and checked here (it gives the head counts
    the peft copy of a LoRA adapter needs).

    Args:
        checkpoint_dir (str): folder holding the checkpoint (and params.json, tokenizer.model).
        checkpoint_files (List[str]): exactly one file, e.g. ``[consolidated.00.pth]``.
        model_type (Union[ModelType, str]): e.g. ``"LLAMA2"``.
        output_dir (str): where saves go.
        adapter_checkpoint (Optional[str]): adapter file to load when resuming (relative to
            checkpoint_dir, or absolute).
        recipe_checkpoint (Optional[str]): ``recipe_state.pt`` to load when resuming.
        resume_from_checkpoint (bool): also return the recipe state (and adapter).
        keep_last_n_checkpoints (Optional[int]): step folders to keep; None keeps all.

    Raises:
        UserFileNotFoundError: if a checkpoint file is missing (the message lists the folder).
        UserValueError: on more than one checkpoint file, an unknown model_type, resuming
            without recipe_checkpoint, a malformed params.json or download record, or a
            checkpoint file that a save to ``output_dir`` would overwrite (not resuming).
    """

    def __init__(
        self,
        checkpoint_dir: str,
        checkpoint_files: List[str],
        model_type: Union[ModelType, str],
        output_dir: str,
        adapter_checkpoint: Optional[str] = None,
        recipe_checkpoint: Optional[str] = None,
        resume_from_checkpoint: bool = False,
        keep_last_n_checkpoints: Optional[int] = None,
    ) -> None:
        self._c = CheckpointerCore(
            checkpoint_dir, checkpoint_files, model_type, output_dir, adapter_checkpoint,
            recipe_checkpoint, resume_from_checkpoint, keep_last_n_checkpoints,
            OutputLayout(model_files=[rf"meta_model_{NUMBER_RE}\.pt"]),
        )
        if len(self._c.files) != 1:
            raise UserValueError(
                "FullModelMetaCheckpointer reads one consolidated file; got "
                f"{len(self._c.files)}: {self._c.files} (model-parallel shards are not supported)"
            )
        self._extras = {n: p for n in _META_EXTRA_FILES if (p := self._c.find_beside(n))}
        params = self._extras.get("params.json")
        self._heads = _sidecars.read_params(params) if params else None

    def load_checkpoint(self) -> Dict[str, Any]:
        """Returns ``{"model": internal state dict}`` (+ recipe state/adapter when resuming)."""
        training_state = self._c.load_training_state()  # checked before the model is read
        path = self._c.files[0]
        meta = as_tensor_dict(_io.torch_load(path), path)
        out = {MODEL_KEY: self._c.convert(self._c.converter.meta_to_tune, meta, path)}
        out.update(training_state)
        return out

    def save_checkpoint(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        intermediate_checkpoint: bool = False,
        adapter_only: bool = False,
        step: Optional[int] = None,
    ) -> None:
        """Write ``meta_model_{epoch}.pt`` (+ params.json, tokenizer.model) and the rest (the
        full list is in ``torchtune.training.checkpointing._core``)."""

        def write_model(writer: SaveWriter, is_step: bool) -> None:
            meta = self._c.convert(
                self._c.converter.tune_to_meta, state_dict[MODEL_KEY], "state_dict['model']",
                user_input=False,
            )
            writer.torch_save(meta, os.path.join(writer.root, f"meta_model_{epoch}.pt"), role="model")
            for name, src in self._extras.items():
                writer.copy_file(src, os.path.join(writer.root, name))

        self._c.save(
            state_dict, epoch, step, None if adapter_only else write_model,
            self._heads, intermediate_checkpoint,
        )


class FullModelTorchTuneCheckpointer:
    """Read and write the internal layout as ``.pt`` files (no key conversion).

    Loading merges all ``checkpoint_files``; saving writes ``torchtune_model_{epoch}.pt``.
    Arguments as for ``FullModelMetaCheckpointer`` (any number of checkpoint files). A
    config.json or params.json beside the weights is read and checked here; it gives the
    head counts that writing a peft adapter needs.
    """

    def __init__(
        self,
        checkpoint_dir: str,
        checkpoint_files: List[str],
        model_type: Union[ModelType, str],
        output_dir: str,
        adapter_checkpoint: Optional[str] = None,
        recipe_checkpoint: Optional[str] = None,
        resume_from_checkpoint: bool = False,
        keep_last_n_checkpoints: Optional[int] = None,
    ) -> None:
        self._c = CheckpointerCore(
            checkpoint_dir, checkpoint_files, model_type, output_dir, adapter_checkpoint,
            recipe_checkpoint, resume_from_checkpoint, keep_last_n_checkpoints,
            OutputLayout(model_files=[rf"torchtune_model_{NUMBER_RE}\.pt"]),
        )
        config, params = self._c.find_beside("config.json"), self._c.find_beside("params.json")
        self._heads: Optional[Dict[str, Optional[int]]] = None
        if config is not None:
            self._heads = _sidecars.heads_from_hf_config(_sidecars.read_hf_config(config), config)
        elif params is not None:
            self._heads = _sidecars.read_params(params)

    def load_checkpoint(self) -> Dict[str, Any]:
        """Returns ``{"model": internal state dict}`` (+ recipe state/adapter when resuming)."""
        training_state = self._c.load_training_state()  # checked before the model is read
        model: Dict[str, torch.Tensor] = {}
        for path in self._c.files:
            sd = as_tensor_dict(_io.torch_load(path), path)
            # A dry-run rename checks the keys belong to this model type (no tensor copies).
            self._c.convert(self._c.converter.tune_to_meta, sd, path)
            model.update(sd)
        out = {MODEL_KEY: model}
        out.update(training_state)
        return out

    def save_checkpoint(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        intermediate_checkpoint: bool = False,
        adapter_only: bool = False,
        step: Optional[int] = None,
    ) -> None:
        """Write ``torchtune_model_{epoch}.pt`` and the rest (listed in ``_core``)."""

        def write_model(writer: SaveWriter, is_step: bool) -> None:
            model = state_dict[MODEL_KEY]
            self._c.convert(self._c.converter.tune_to_meta, model, "state_dict['model']", user_input=False)
            writer.torch_save(model, os.path.join(writer.root, f"torchtune_model_{epoch}.pt"), role="model")

        self._c.save(
            state_dict, epoch, step, None if adapter_only else write_model,
            self._heads, intermediate_checkpoint,
        )
