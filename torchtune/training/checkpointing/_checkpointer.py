"""Checkpointers for Meta's ``consolidated.NN.pth`` layout and torchtune's internal layout.

See ``_core`` for what a save writes and the shared load/save contract.
"""

import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import torch

from torchtune._errors import UserValueError
from torchtune.training.checkpointing import _io, _meta_shards, _sidecars
from torchtune.training.checkpointing._core import (
    CheckpointerCore,
    as_tensor_dict,
    layer_groups,
)
from torchtune.training.checkpointing._overwrite_guard import OutputLayout
from torchtune.training.checkpointing._save_writer import SaveWriter
from torchtune.training.checkpointing._utils import MODEL_KEY, MODEL_TYPES, NUMBER_RE, ModelType


# Beside the weights so llama.cpp's converter accepts the output folder.
# Copied beside a single-file save when the input has them (Mistral's own folders carry
# tokenizer.model.v3 or tekken.json instead of tokenizer.model).
_META_EXTRA_FILES = ("params.json", "tokenizer.model", "tokenizer.model.v3", "tekken.json")


class FullModelMetaCheckpointer:
    """Read and write Meta's ``consolidated.NN.pth`` layout (meta-llama/llama, llama-models).

    One file (``consolidated.00.pth``) or the N model-parallel files of the large models
    (``consolidated.00.pth`` ... ``consolidated.07.pth``): their slices are joined into
    full tensors on load (``_meta_shards``), and a save cuts them again into as many files,
    split the same way. ``params.json`` beside the checkpoint is read and checked here (it
    gives the head counts the peft copy of a LoRA adapter needs, and the embedding size a
    joined checkpoint must have).

    For a tied model type (``LLAMA3_2``) the file's ``output.weight`` (Meta ships it, equal
    to ``tok_embeddings.weight``) is dropped on load after checking it equals the embedding,
    and written again on save iff the input had it.

    Args:
        checkpoint_dir (str): folder holding the checkpoint (and params.json, tokenizer.model).
        checkpoint_files (List[str]): ``[consolidated.00.pth]``, or every rank's file.
        model_type (Union[ModelType, str]): e.g. ``"LLAMA2"``, ``"LLAMA3"``, ``"LLAMA3_2"``.
        output_dir (str): where saves go.
        adapter_checkpoint (Optional[str]): adapter file to load when resuming (relative to
            checkpoint_dir, or absolute).
        recipe_checkpoint (Optional[str]): ``recipe_state.pt`` to load when resuming; None
            resumes the newest save in ``output_dir`` (its adapter, or its model files).
        resume_from_checkpoint (bool): also return the recipe state (and adapter).
        keep_last_n_checkpoints (Optional[int]): step folders to keep; None keeps all.
        should_load_recipe_state (bool): torchtune 0.6.1's name for resume_from_checkpoint.

    Raises:
        UserFileNotFoundError: if a checkpoint file is missing (the message lists the folder).
        UserValueError: on an unknown model_type, resuming without recipe_checkpoint
            and no save in output_dir, a
            malformed params.json or download record, a checkpoint file that a save to
            ``output_dir`` would overwrite (not resuming), model-parallel files that are not
            the ranks of one checkpoint (missing ranks, other tensors, shapes or values),
            or (tied types) an ``output.weight`` that differs from the embedding.
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
        should_load_recipe_state: bool = False,
    ) -> None:
        kind = ModelType.coerce(model_type)
        if not MODEL_TYPES[kind].meta_format:
            raise UserValueError(
                f"model_type {kind.name} has no Meta-format checkpoint: use "
                "FullModelHFCheckpointer (or FullModelTorchTuneCheckpointer)"
            )
        self._c = CheckpointerCore(
            checkpoint_dir, checkpoint_files, model_type, output_dir, adapter_checkpoint,
            recipe_checkpoint, resume_from_checkpoint or should_load_recipe_state, keep_last_n_checkpoints,
            OutputLayout(
                model_files=[rf"meta_model_{NUMBER_RE}\.(?:pt|safetensors)"],
                model_folders=[rf"meta_model_{NUMBER_RE}"],
            ),
        )
        self._ranks = _meta_shards.order_files(self._c.files)
        # Mistral ships its own checkpoints as one consolidated.safetensors with Meta's names:
        # read it as such, and write the output as safetensors too.
        self._safetensors = self._ranks[0].endswith(".safetensors")
        if self._safetensors and len(self._ranks) > 1:
            raise UserValueError(
                f"checkpoint_files lists {len(self._ranks)} safetensors files; the Meta "
                "checkpointer reads one consolidated.safetensors (Mistral's layout) or Meta's "
                "consolidated.NN.pth files"
            )
        names = [os.path.basename(p) for p in self._ranks]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise UserValueError(
                f"checkpoint_files lists {twice} more than once; a model-parallel Meta "
                f"checkpoint is one file per rank: {self._c.files}"
            )
        self._extras = {n: p for n in _META_EXTRA_FILES if (p := self._c.find_beside(n))}
        params = self._extras.get("params.json")
        self._heads = _sidecars.read_params(params) if params else None
        self._layout_source = f"params.json {params}"
        self._had_output: Optional[bool] = None  # tied types: did the input carry output.weight

    def load_model_groups(self) -> Iterator[Dict[str, torch.Tensor]]:
        """The model in the internal layout, one ``layer_groups`` group per dict, each read
        from disk (and joined across the rank files) when asked for (contract in ``_core``)."""
        names = [(p, _io.checkpoint_keys(p)) for p in self._ranks]
        if len(names) > 1:
            _meta_shards.check_same_names(names)
        self._had_output = "output.weight" in names[0][1]
        kept: Dict[str, Any] = {}  # files that cannot be memory-mapped, read once
        for keys in layer_groups(names[0][1]):
            yield self._load_group(keys, kept)  # not bound to a name: the caller may drop it

    def _load_group(self, keys: List[str], kept: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        shards = []
        for path in self._ranks:
            if self._safetensors:
                shards.append((path, _io.safetensors_load(path, keys)))
                continue
            sd = as_tensor_dict(_io.torch_load_per_group(path, kept), path)
            shards.append((path, {key: sd[key] for key in keys}))
        meta = _meta_shards.merge(shards) if len(shards) > 1 else shards[0][1]
        source = ", ".join(self._ranks)
        if len(shards) > 1:
            self._check_joined_size(meta, source)
        model = self._c.convert(self._c.converter.meta_to_tune, meta, source)
        self._c.untie(model, source)
        return model

    @property
    def model_layout(self) -> Optional[Dict[str, Any]]:
        """The attention layout the file beside the weights gives (``num_heads``,
        ``num_kv_heads``, ``dim``, ``head_dim`` or None for dim / num_heads, ``tied``:
        whether the output shares the embedding, None if the model type does not say, and
        ``source``), to compare with the model before it is built; None without one."""
        if self._heads is None:
            return None
        return dict(self._heads, tied=self._c.tied, source=self._layout_source)

    @property
    def latest_checkpoint(self) -> Optional[str]:
        """The folder of the newest save a run can resume from (its ``recipe_state.pt``):
        this run's last intermediate save, else the one it resumed from; None if neither."""
        return self._c.latest_resumable()

    @property
    def input_files(self) -> List[str]:
        """Every file this checkpointer reads: the model, and when resuming the adapter and
        the recipe state."""
        return self._c.guard.inputs

    def protect_inputs(self, paths: Iterable[str]) -> None:
        """Guard other files the run reads (tokenizer, data, a reference model) against this
        checkpointer's saves; where a save would replace one, refuse now, before training."""
        # A single-file save copies params.json and tokenizer.model beside meta_model_N.pt.
        self._c.protect_inputs(paths, copies=self._extras if len(self._ranks) == 1 else None)

    def load_checkpoint(self, stream_model: bool = False) -> Dict[str, Any]:
        """Returns ``{"model": internal state dict}`` (+ recipe state/adapter when resuming);
        with ``stream_model``, ``"model"`` is ``load_model_groups()``."""
        return self._c.load(self.load_model_groups, stream_model)

    def _check_joined_size(self, meta: Dict[str, torch.Tensor], source: str) -> None:
        """A subset of the ranks joins into tensors too small: params.json tells."""
        emb = meta.get("tok_embeddings.weight")
        if self._heads is None or emb is None or emb.dim() != 2:
            return
        if emb.shape[1] != self._heads["dim"]:
            raise UserValueError(
                f"The {len(self._ranks)} Meta shards ({source}) join into an embedding of "
                f"size {emb.shape[1]}, but params.json has dim {self._heads['dim']}: list "
                "every rank's consolidated.NN.pth file of the checkpoint"
            )

    def _input_had_output(self) -> bool:
        if self._had_output is None:  # saving without loading: read the key list only
            self._had_output = "output.weight" in _io.checkpoint_keys(self._ranks[0])
        return self._had_output

    def save_checkpoint(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        intermediate_checkpoint: bool = False,
        adapter_only: bool = False,
        step: Optional[int] = None,
    ) -> None:
        """Write ``meta_model_{epoch}.pt`` (``.safetensors`` for a ``consolidated.safetensors``
        input) (+ params.json, tokenizer.model) and the rest (the
        full list is in ``torchtune.training.checkpointing._core``). A model-parallel input
        gives the folder ``meta_model_{epoch}/`` with the input's file names, one per rank,
        and params.json, tokenizer.model: what Meta's loaders read."""

        def write_model(writer: SaveWriter, is_step: bool) -> None:
            model = state_dict[MODEL_KEY]
            if self._c.tied:
                model = self._c.retie(model, self._input_had_output())
            meta = self._c.convert(
                self._c.converter.tune_to_meta, model, "state_dict['model']", user_input=False,
            )
            if len(self._ranks) == 1 and self._safetensors:
                meta = {k: v.contiguous() for k, v in meta.items()}
                path = os.path.join(writer.root, f"meta_model_{epoch}.safetensors")
                writer.safetensors_save(meta, path, metadata={"format": "pt"}, role="model")
                for name, src in self._extras.items():
                    writer.copy_file(src, os.path.join(writer.root, name))
                return
            if len(self._ranks) == 1:
                writer.torch_save(meta, os.path.join(writer.root, f"meta_model_{epoch}.pt"), role="model")
                for name, src in self._extras.items():
                    writer.copy_file(src, os.path.join(writer.root, name))
                return
            parts = _meta_shards.split(meta, len(self._ranks))
            del meta
            with writer.folder(os.path.join(writer.root, f"meta_model_{epoch}")) as folder:
                for path, part in zip(self._ranks, parts):
                    writer.torch_save(part, os.path.join(folder, os.path.basename(path)), role="model")
                for name, src in self._extras.items():
                    writer.copy_file(src, os.path.join(folder, name))

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
        should_load_recipe_state: bool = False,
    ) -> None:
        self._c = CheckpointerCore(
            checkpoint_dir, checkpoint_files, model_type, output_dir, adapter_checkpoint,
            recipe_checkpoint, resume_from_checkpoint or should_load_recipe_state, keep_last_n_checkpoints,
            OutputLayout(model_files=[rf"torchtune_model_{NUMBER_RE}\.pt"]),
        )
        config, params = self._c.find_beside("config.json"), self._c.find_beside("params.json")
        self._heads: Optional[Dict[str, Optional[int]]] = None
        if config is not None:
            self._heads = _sidecars.heads_from_hf_config(_sidecars.read_hf_config(config), config)
            self._layout_source = f"config.json {config}"
        elif params is not None:
            self._heads = _sidecars.read_params(params)
            self._layout_source = f"params.json {params}"

    def load_model_groups(self) -> Iterator[Dict[str, torch.Tensor]]:
        """The model, one ``layer_groups`` group per dict, each read from disk when asked
        for (contract in ``_core``)."""
        paths: Dict[str, str] = {}
        for path in self._c.files:
            keys = _io.checkpoint_keys(path)
            # A dry-run rename checks the keys belong to this model type (no tensor is read).
            self._c.convert(self._c.converter.tune_to_meta, dict.fromkeys(keys), path)
            paths.update(dict.fromkeys(keys, path))
        kept: Dict[str, Any] = {}  # files that cannot be memory-mapped, read once
        for keys in layer_groups(paths):
            yield self._load_group(keys, paths, kept)  # not bound to a name: the caller may drop it

    @staticmethod
    def _load_group(keys: List[str], paths: Dict[str, str], kept: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        model: Dict[str, torch.Tensor] = {}
        for path in dict.fromkeys(paths[k] for k in keys):
            sd = as_tensor_dict(_io.torch_load_per_group(path, kept), path)
            model.update({k: sd[k] for k in keys if paths[k] == path})
        return model

    @property
    def model_layout(self) -> Optional[Dict[str, Any]]:
        """The attention layout the file beside the weights gives (``num_heads``,
        ``num_kv_heads``, ``dim``, ``head_dim`` or None for dim / num_heads, ``tied``:
        whether the output shares the embedding, None if the model type does not say, and
        ``source``), to compare with the model before it is built; None without one."""
        if self._heads is None:
            return None
        return dict(self._heads, tied=self._c.tied, source=self._layout_source)

    @property
    def latest_checkpoint(self) -> Optional[str]:
        """The folder of the newest save a run can resume from (its ``recipe_state.pt``):
        this run's last intermediate save, else the one it resumed from; None if neither."""
        return self._c.latest_resumable()

    @property
    def input_files(self) -> List[str]:
        """Every file this checkpointer reads: the model, and when resuming the adapter and
        the recipe state."""
        return self._c.guard.inputs

    def protect_inputs(self, paths: Iterable[str]) -> None:
        """Guard other files the run reads (tokenizer, data, a reference model) against this
        checkpointer's saves; where a save would replace one, refuse now, before training."""
        self._c.protect_inputs(paths)

    def load_checkpoint(self, stream_model: bool = False) -> Dict[str, Any]:
        """Returns ``{"model": internal state dict}`` (+ recipe state/adapter when resuming);
        with ``stream_model``, ``"model"`` is ``load_model_groups()``."""
        return self._c.load(self.load_model_groups, stream_model)

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
