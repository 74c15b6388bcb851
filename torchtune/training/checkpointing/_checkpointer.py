"""Checkpointers for Meta's ``consolidated.00.pth`` layout and torchtune's internal layout.

See ``_core`` for what a save writes and the shared load/save contract.
"""

import os
from typing import Any, Dict, List, Optional, Union

import torch

from torchtune.training.checkpointing import _io
from torchtune.training.checkpointing._core import (
    CheckpointerCore,
    as_tensor_dict,
    heads_from_hf_config,
    heads_from_params,
)
from torchtune.training.checkpointing._utils import MODEL_KEY, ModelType

# Beside the weights so llama.cpp's converter accepts the output folder.
_META_EXTRA_FILES = ("params.json", "tokenizer.model")


class FullModelMetaCheckpointer:
    """Read and write Meta's ``consolidated.00.pth`` layout (meta-llama/llama).

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
        FileNotFoundError: if a checkpoint file is missing (the message lists the folder).
        ValueError: on more than one checkpoint file, an unknown model_type, or resuming
            without recipe_checkpoint.
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
        )
        if len(self._c.files) != 1:
            raise ValueError(
                "FullModelMetaCheckpointer reads one consolidated file; got "
                f"{len(self._c.files)}: {self._c.files} (model-parallel shards are not supported)"
            )

    def load_checkpoint(self) -> Dict[str, Any]:
        """Returns ``{"model": internal state dict}`` (+ recipe state/adapter when resuming)."""
        path = self._c.files[0]
        meta = as_tensor_dict(_io.torch_load(path), path)
        out = {MODEL_KEY: self._c.convert(self._c.converter.meta_to_tune, meta, path)}
        out.update(self._c.load_training_state())
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

        def write_model(root: str, is_step: bool) -> None:
            meta = self._c.convert(self._c.converter.tune_to_meta, state_dict[MODEL_KEY], "state_dict['model']")
            _io.torch_save(meta, os.path.join(root, f"meta_model_{epoch}.pt"))
            for name in _META_EXTRA_FILES:
                src = self._c.find_beside(name)
                if src is not None:
                    _io.copy_file(src, os.path.join(root, name))

        self._c.save(
            state_dict, epoch, step, None if adapter_only else write_model,
            lambda: heads_from_params(self._c.find_beside("params.json"), "params.json"),
            intermediate_checkpoint,
        )


class FullModelTorchTuneCheckpointer:
    """Read and write the internal layout as ``.pt`` files (no key conversion).

    Loading merges all ``checkpoint_files``; saving writes ``torchtune_model_{epoch}.pt``.
    Arguments as for ``FullModelMetaCheckpointer`` (any number of checkpoint files). Writing
    a peft adapter needs head counts from a params.json or config.json beside the weights.
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
        )

    def load_checkpoint(self) -> Dict[str, Any]:
        """Returns ``{"model": internal state dict}`` (+ recipe state/adapter when resuming)."""
        model: Dict[str, torch.Tensor] = {}
        for path in self._c.files:
            sd = as_tensor_dict(_io.torch_load(path), path)
            # A dry-run rename checks the keys belong to this model type (no tensor copies).
            self._c.convert(self._c.converter.tune_to_meta, sd, path)
            model.update(sd)
        out = {MODEL_KEY: model}
        out.update(self._c.load_training_state())
        return out

    def _heads(self) -> Dict[str, Optional[int]]:
        config = self._c.find_beside("config.json")
        if config is not None:
            return heads_from_hf_config(config)
        return heads_from_params(self._c.find_beside("params.json"), "params.json or config.json")

    def save_checkpoint(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        intermediate_checkpoint: bool = False,
        adapter_only: bool = False,
        step: Optional[int] = None,
    ) -> None:
        """Write ``torchtune_model_{epoch}.pt`` and the rest (listed in ``_core``)."""

        def write_model(root: str, is_step: bool) -> None:
            model = state_dict[MODEL_KEY]
            self._c.convert(self._c.converter.tune_to_meta, model, "state_dict['model']")
            _io.torch_save(model, os.path.join(root, f"torchtune_model_{epoch}.pt"))

        self._c.save(
            state_dict, epoch, step, None if adapter_only else write_model,
            self._heads, intermediate_checkpoint,
        )
