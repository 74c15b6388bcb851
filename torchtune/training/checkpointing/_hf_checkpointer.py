"""Checkpointer for transformers' Llama layout: ``.bin`` or ``.safetensors``, sharded or not.

See ``_core`` for what a save writes and the shared load/save contract.
"""

import glob
import logging
import os
from collections.abc import Iterable
from typing import Any, Dict, Iterator, List, Optional, Union

import torch

from torchtune._errors import UserValueError
from torchtune.training.checkpointing import _io, _sidecars
from torchtune.training.checkpointing._core import (
    CheckpointerCore,
    as_tensor_dict,
    expand_checkpoint_files,
    layer_groups,
)
from torchtune.training.checkpointing._overwrite_guard import OutputLayout
from torchtune.training.checkpointing._save_writer import SaveWriter
from torchtune.training.checkpointing._utils import (
    HF_MODEL_TYPES,
    MANIFEST_NAME,
    MODEL_KEY,
    NUMBER_RE,
    ModelType,
)

log = logging.getLogger(__name__)

# Files beside the weights that a save does not copy into its model folder: weights in any
# format (the saved shards replace them; a stale copy in another format would be read
# instead by some tools) and indexes, hidden files (``.tune_download.json``,
# ``.gitattributes``, our temporaries) and the bookkeeping of our own saves. Every other
# file (config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
# special_tokens_map.json, tokenizer.model, README.md, LICENSE ...) is copied, so that
# from_pretrained, llama.cpp's convert_hf_to_gguf.py and vLLM read the folder as they read
# the original. Subfolders (``original/``) are not copied.
_NOT_COPIED_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx",
    ".index.json",
)
_NOT_COPIED_NAMES = (MANIFEST_NAME,)
# Looked for in checkpoint_dir too when not beside the weights (the layout before shards
# were put in subfolders).
_HF_SIDECARS = (
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def _copied(name: str) -> bool:
    return not (
        name.startswith(".") or name in _NOT_COPIED_NAMES or name.endswith(_NOT_COPIED_SUFFIXES)
    )


class FullModelHFCheckpointer:
    """Read and write transformers' Llama layout: ``.bin`` or ``.safetensors``, sharded or not.

    Head counts come from ``config.json`` beside the weights. Saves mirror the input: same
    file names, same tensor->file assignment, same format, and the index json (written
    whenever there is more than one shard, so ``from_pretrained`` can read the folder).
    config.json, the index json and ``.tune_download.json`` are read and checked here, when
    the checkpointer is built. The model folder a save writes also gets a copy of every
    other file beside the input weights (tokenizer and generation configs, README ...; not
    weights in any format, indexes, hidden files or our manifest; not subfolders).

    For a tied model type (``LLAMA3_2``; ``QWEN2``/``QWEN3`` when config.json says
    ``tie_word_embeddings: true``) the files normally have no ``lm_head.weight``; one that
    is there must equal the embedding, is dropped on load and written again on save.
    config.json's ``tie_word_embeddings`` must agree with a model type that fixes it.

    Args:
        checkpoint_dir (str): folder with the weights, config.json and tokenizer files.
        checkpoint_files (Optional[List[str]]): the weight files (an ``*.index.json`` entry is
            expanded to the shards it names); None: the folder's ``model.safetensors`` or
            ``pytorch_model.bin`` (or their index), as ``from_pretrained`` looks for them.
        model_type (Optional[Union[ModelType, str]]): e.g. ``"LLAMA2"``, ``"LLAMA3"``,
            ``"LLAMA3_2"``, ``"QWEN2"``, ``"QWEN3"``; None: read from config.json (its
            ``architectures``; see ``torchtune.models.auto_model``).
        output_dir (str): where saves go (required).
        adapter_checkpoint (Optional[str]): adapter file to load when resuming.
        recipe_checkpoint (Optional[str]): ``recipe_state.pt`` to load when resuming; None
            resumes the newest save in ``output_dir`` (its adapter, or its model files).
        resume_from_checkpoint (bool): also return the recipe state (and adapter).
        keep_last_n_checkpoints (Optional[int]): step folders to keep; None keeps all.
        should_load_recipe_state (bool): torchtune 0.6.1's name for resume_from_checkpoint.

    Raises:
        UserFileNotFoundError: if a weight file or config.json is missing.
        UserValueError: on mixed formats, an index naming shards not listed or outside
            checkpoint_dir, a config.json of another model type or with bad values, resuming
            without recipe_checkpoint, or a checkpoint file that a save to ``output_dir``
            would overwrite (not resuming).
    """

    def __init__(
        self,
        checkpoint_dir: str,
        checkpoint_files: Optional[List[str]] = None,
        model_type: Optional[Union[ModelType, str]] = None,
        output_dir: Optional[str] = None,
        adapter_checkpoint: Optional[str] = None,
        recipe_checkpoint: Optional[str] = None,
        resume_from_checkpoint: bool = False,
        keep_last_n_checkpoints: Optional[int] = None,
        should_load_recipe_state: bool = False,
    ) -> None:
        if output_dir is None:
            raise UserValueError("checkpointer.output_dir is required: the folder saves go to")
        if checkpoint_files is None:
            checkpoint_files = [_hf_weights_in(checkpoint_dir)]
        checkpoint_files = expand_checkpoint_files(checkpoint_files, checkpoint_dir)
        files = [checkpoint_files] if isinstance(checkpoint_files, str) else checkpoint_files
        listed = files if isinstance(files, Iterable) else ()  # the core names a bad value
        index_names = [f for f in listed if isinstance(f, str) and f.endswith(".index.json")]
        self._index_path: Optional[str] = None
        self._index: Optional[Dict[str, Any]] = None
        if index_names:
            # Listing the index alone (or with its shards) means "the shards it names".
            self._index_path = os.path.join(str(checkpoint_dir), index_names[0])
            folder = os.path.dirname(self._index_path)
            self._index = _sidecars.read_index(_io.require_file(self._index_path, "index file"))
            shards = list(dict.fromkeys(self._index["weight_map"].values()))
            files = [os.path.relpath(os.path.join(folder, s), str(checkpoint_dir)) for s in shards]
        if model_type is None:
            model_type = _model_type_from_config(checkpoint_dir, files)
        self._c = CheckpointerCore(
            checkpoint_dir, files, model_type, output_dir, adapter_checkpoint,
            recipe_checkpoint, resume_from_checkpoint or should_load_recipe_state, keep_last_n_checkpoints,
            OutputLayout(model_folders=[rf"epoch_{NUMBER_RE}"]),
        )
        exts = {os.path.splitext(f)[1] for f in self._c.files}
        for f in self._c.files:
            if os.path.splitext(f)[1] not in (".bin", ".pt", ".pth", ".safetensors"):
                what_it_is = _io.not_torch_save(f)
                raise UserValueError(
                    f"checkpoint file {f} is not a .safetensors, .bin, .pt or .pth file"
                    + (f" ({what_it_is})" if what_it_is else "")
                )
        if ".safetensors" in exts and len(exts) > 1:
            raise UserValueError(
                f"checkpoint_files mixes .safetensors and torch.save files: {self._c.files}; "
                "list the files of one format"
            )
        self._safetensors = exts == {".safetensors"}
        self._shard_names = [os.path.basename(f) for f in self._c.files]
        if self._index_path is None:
            self._find_index()

        config_path = self._c.find_beside("config.json") or _io.require_file(
            os.path.join(self._c.checkpoint_dir, "config.json"), "config.json"
        )
        self._config = _sidecars.read_hf_config(config_path)
        hf_type = self._config.get("model_type")
        if hf_type is not None and hf_type not in HF_MODEL_TYPES[self._c.model_type]:
            raise UserValueError(
                f"{config_path} has model_type {hf_type!r}, which does not match "
                f"model_type {self._c.model_type.name} (expected one of "
                f"{HF_MODEL_TYPES[self._c.model_type]})"
            )
        text = _text_decoder_config(self._config, config_path)
        self._multimodal = text is not self._config
        if self._multimodal:  # the peft adapter goes on the decoder inside the model
            self._c.peft_text_module = _TEXT_MODULE
        self._heads = _sidecars.heads_from_hf_config(text, config_path)
        self._layout_source = f"config.json {config_path}"
        self._description, self._description_error = _describe(self._config, self._layout_source)
        tie = text.get("tie_word_embeddings")
        if self._c.tied is None:  # a family with tied and untied sizes (QWEN2, QWEN3)
            if tie is not None and not isinstance(tie, bool):
                raise UserValueError(
                    f"{config_path} has tie_word_embeddings {tie!r}; expected true or false"
                )
            self._c.tied = bool(tie)
        elif tie is not None and tie is not self._c.tied:
            raise UserValueError(
                f"{config_path} has tie_word_embeddings {str(tie).lower()}, but model_type "
                f"{self._c.model_type.name} {'ties' if self._c.tied else 'does not tie'} the "
                "output projection to the embedding"
                + (" (use LLAMA3_2 for Llama 3.2 1B/3B)" if tie is True else "")
            )
        # Found now, copied at save time.
        self._extras = self._find_extras(config_path)
        self._weight_map: Optional[Dict[str, str]] = None
        # File name -> text-decoder name, for the tensors the model holds (they differ in a
        # multimodal checkpoint, by the prefix); the others are carried through unchanged.
        self._text_names: Dict[str, str] = {}
        self._carried: List[str] = []
        self._metadata: Dict[str, Optional[Dict[str, str]]] = {}

    def _find_extras(self, config_path: str) -> Dict[str, str]:
        """Every non-weight file beside the weights (see ``_copied``), and the usual config
        and tokenizer files from checkpoint_dir when they are not beside the weights."""
        folder = os.path.dirname(self._c.files[0])
        extras = {}
        with _io.user_os_errors(folder):
            names = sorted(os.listdir(folder))
        for name in names:
            path = os.path.join(folder, name)
            if _copied(name) and os.path.isfile(path):
                extras[name] = path
        for name in _HF_SIDECARS:
            if name not in extras and (path := self._c.find_beside(name)):
                extras[name] = path
        extras.setdefault("config.json", config_path)
        return extras

    def _find_index(self) -> None:
        """Remember the ``*.index.json`` beside the shards that maps tensors into them, if any."""
        folder = os.path.dirname(self._c.files[0])
        for path in sorted(glob.glob(os.path.join(folder, "*.index.json"))):
            index = _sidecars.read_index(path, required=False)
            if index is None:
                continue  # some other tool's index, not a transformers shard index
            shards = set(index["weight_map"].values())
            if shards & set(self._shard_names):
                unlisted = sorted(shards - set(self._shard_names))
                if unlisted:
                    raise UserValueError(
                        f"Index {path} maps tensors to {unlisted}, which checkpoint_files does "
                        f"not list (it lists {self._shard_names})"
                    )
                self._index_path, self._index = path, index
                return

    def _read(self, path: str, keys: List[str], kept: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The tensors ``keys`` of one shard, memory-mapped (the map closes with them)."""
        if self._safetensors:
            return _io.safetensors_load(path, keys)
        shard = as_tensor_dict(_io.torch_load_per_group(path, kept), path)
        return {key: shard[key] for key in keys}

    def _plan(self) -> Dict[str, str]:
        """Which shard holds each tensor, from the files' key lists (no tensor is read)."""
        paths: Dict[str, str] = {}
        weight_map: Dict[str, str] = {}
        for path in self._c.files:
            name = os.path.basename(path)
            if self._safetensors:
                self._metadata[name] = _io.safetensors_metadata(path)
            for key in _io.checkpoint_keys(path):
                if key in weight_map:
                    raise UserValueError(
                        f"Tensor {key!r} appears in both {weight_map[key]} and {name}"
                    )
                weight_map[key], paths[key] = name, path
        self._weight_map = weight_map
        self._text_names, self._carried = _split_text_decoder(list(weight_map), self._multimodal)
        if self._carried:
            log.info(
                "%s is a multimodal checkpoint: fine-tuning its text decoder; its %d other "
                "tensors (vision tower, projector) are carried through unchanged into every save",
                self._layout_source, len(self._carried),
            )
        return {self._text_names[k]: p for k, p in paths.items() if k in self._text_names}

    def load_model_groups(self) -> Iterator[Dict[str, torch.Tensor]]:
        """The model in the internal layout, one ``layer_groups`` group per dict, each read
        from disk when asked for (the contract in ``_core``)."""
        paths = self._plan()
        kept: Dict[str, Any] = {}  # files that cannot be memory-mapped, read once
        for keys in layer_groups(paths):
            yield self._load_group(keys, paths, kept)  # not bound to a name: the caller may drop it

    def _load_group(
        self, keys: List[str], paths: Dict[str, str], kept: Dict[str, Any]
    ) -> Dict[str, torch.Tensor]:
        raw: Dict[str, torch.Tensor] = {}
        file_names = {text: name for name, text in self._text_names.items()}
        for path in dict.fromkeys(paths[k] for k in keys):
            group = [k for k in keys if paths[k] == path]
            read = self._read(path, [file_names[k] for k in group], kept)
            raw.update({k: read[file_names[k]] for k in group})
        source = ", ".join(self._shard_names)
        model = self._c.convert(self._c.converter.hf_to_tune, raw, source, **self._heads)
        self._c.untie(model, source)  # the save repeats lm_head iff the weight map has it
        return model

    @property
    def model_layout(self) -> Optional[Dict[str, Any]]:
        """The layout config.json gives (``num_heads``, ``num_kv_heads``, ``dim``,
        ``head_dim`` or None for dim / num_heads, ``tied``: whether the output shares the
        embedding, and ``source``), to compare with the model before it is built; with
        ``description``, the whole architecture config.json describes
        (``torchtune.models._auto``), or None and ``description_error`` saying why not."""
        return dict(
            self._heads, tied=self._c.tied, source=self._layout_source,
            description=self._description, description_error=self._description_error,
        )

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

    def _ensure_weight_map(self) -> Dict[str, str]:
        if self._weight_map is None:  # saving without loading first: read the key lists only
            self._plan()
        return self._weight_map

    def _write_model_folder(
        self, writer: SaveWriter, folder: str, model_sd: Dict[str, torch.Tensor]
    ) -> None:
        weight_map = self._ensure_weight_map()
        if self._c.tied:
            model_sd = self._c.retie(model_sd, "lm_head.weight" in self._text_names.values())
        text = self._c.convert(
            self._c.converter.tune_to_hf, model_sd, "state_dict['model']", user_input=False,
            **self._heads,
        )
        file_names = {t: name for name, t in self._text_names.items()}
        hf = {file_names.get(k, k): v for k, v in text.items()}
        hf.update(self._read_carried())
        unmapped = [k for k in hf if k not in weight_map]
        if unmapped:
            raise UserValueError(
                f"Cannot save tensor {unmapped[0]!r}: it is in none of the input shards "
                f"{self._shard_names}"
            )
        out_map: Dict[str, str] = {}
        total = 0
        for shard in self._shard_names:
            tensors = {k: v for k, v in hf.items() if weight_map[k] == shard}
            out_map.update({k: shard for k in tensors})
            total += sum(v.numel() * v.element_size() for v in tensors.values())
            path = os.path.join(folder, shard)
            if self._safetensors:
                writer.safetensors_save(tensors, path, self._metadata.get(shard), role="model")
            else:
                writer.torch_save(tensors, path, role="model")
        if self._index is not None or len(self._shard_names) > 1:
            index: Dict[str, Any] = {"metadata": {}, "weight_map": {}}
            if self._index is not None:
                index = dict(self._index)  # read and checked when the checkpointer was built
                name = os.path.basename(self._index_path)
            else:
                name = "model.safetensors.index.json" if self._safetensors else "pytorch_model.bin.index.json"
            index["metadata"] = dict(index.get("metadata") or {}, total_size=total)
            index["weight_map"] = {k: out_map[k] for k in hf}
            writer.json_save(index, os.path.join(folder, name))
        for name, src in self._extras.items():
            writer.copy_file(src, os.path.join(folder, name))

    def _read_carried(self) -> Dict[str, torch.Tensor]:
        """The tensors the model does not hold (a multimodal checkpoint's vision tower and
        projector), as the input files have them: each save writes them back unchanged."""
        if not self._carried:
            return {}
        folder = os.path.dirname(self._c.files[0])
        out: Dict[str, torch.Tensor] = {}
        kept: Dict[str, Any] = {}
        for shard in dict.fromkeys(self._weight_map[k] for k in self._carried):
            keys = [k for k in self._carried if self._weight_map[k] == shard]
            out.update(self._read(os.path.join(folder, shard), keys, kept))
        return out

    def save_checkpoint(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        intermediate_checkpoint: bool = False,
        adapter_only: bool = False,
        step: Optional[int] = None,
    ) -> None:
        """Write the model into ``output_dir/epoch_{epoch}/`` (or the step folder) and the
        rest (the full list is in ``torchtune.training.checkpointing._core``)."""

        def write_model(writer: SaveWriter, is_step: bool) -> None:
            if is_step:
                self._write_model_folder(writer, writer.root, state_dict[MODEL_KEY])
            else:
                with writer.folder(os.path.join(writer.root, f"epoch_{epoch}")) as tmp:
                    self._write_model_folder(writer, tmp, state_dict[MODEL_KEY])

        self._c.save(
            state_dict, epoch, step, None if adapter_only else write_model,
            dict(self._heads), intermediate_checkpoint,
        )


# What from_pretrained looks for in a folder, in its order.
_HF_WEIGHT_NAMES = (
    "model.safetensors.index.json", "model.safetensors",
    "pytorch_model.bin.index.json", "pytorch_model.bin",
)


def _hf_weights_in(checkpoint_dir: str) -> str:
    """The weights file (or index) of a transformers folder, for ``checkpoint_files: null``."""
    for name in _HF_WEIGHT_NAMES:
        if os.path.isfile(os.path.join(str(checkpoint_dir), name)):
            return name
    raise UserValueError(
        f"checkpointer.checkpoint_dir {checkpoint_dir} holds none of {list(_HF_WEIGHT_NAMES)}; "
        "name the weight files in checkpointer.checkpoint_files"
    )


def _config_path(checkpoint_dir: str, files: List[str]) -> str:
    """config.json in checkpoint_dir, else beside the first weight file."""
    for folder in (str(checkpoint_dir), os.path.dirname(os.path.join(str(checkpoint_dir), str(files[0])))):
        path = os.path.join(folder, "config.json")
        if os.path.isfile(path):
            return path
    return _io.require_file(os.path.join(str(checkpoint_dir), "config.json"), "config.json")


def _model_type_from_config(checkpoint_dir: str, files: List[str]) -> str:
    """The key-map family of the folder's config.json (``checkpointer.model_type`` left out)."""
    from torchtune.models._auto import checkpoint_model_type

    path = _config_path(checkpoint_dir, files)
    return checkpoint_model_type(_sidecars.read_hf_config(path), f"config.json {path}")


def _text_decoder_config(config: Dict[str, Any], path: str) -> Dict[str, Any]:
    from torchtune.models._auto import text_decoder_config

    return text_decoder_config(config, f"config.json {path}")


# The text decoder's module inside transformers 5's multimodal models (what a peft
# adapter on it is named after).
_TEXT_MODULE = "model.language_model."

# Where a multimodal checkpoint keeps its text decoder: the Hub files (and transformers'
# saves) under language_model.model. / language_model.lm_head., transformers 5's modules
# under model.language_model. / lm_head.
_TEXT_PREFIXES = (
    (("language_model.model.", "model."), ("language_model.lm_head.", "lm_head.")),
    (("model.language_model.", "model."), ("lm_head.", "lm_head.")),
)


def _split_text_decoder(keys: List[str], multimodal: bool):
    """``({file name: text-decoder name}, [carried names])`` of a checkpoint's tensors:
    all of them the decoder's in a text-only checkpoint; in a multimodal one, those under
    the decoder's prefix, renamed to a text checkpoint's names."""
    if not multimodal:
        return {k: k for k in keys}, []
    for rules in _TEXT_PREFIXES:
        if any(k.startswith(rules[0][0]) for k in keys):
            break
    else:
        raise UserValueError(
            "the multimodal checkpoint holds no text decoder under "
            f"{[r[0][0] for r in _TEXT_PREFIXES]}"
        )
    names, carried = {}, []
    for key in keys:
        for prefix, replacement in rules:
            if key.startswith(prefix):
                names[key] = replacement + key[len(prefix):]
                break
        else:
            carried.append(key)
    return names, carried


def _describe(config: Dict[str, Any], where: str):
    """The description config.json gives, or None and the one-line reason it gives none."""
    from torchtune.models._auto import description_from_hf_config

    try:
        return description_from_hf_config(config, where), None
    except UserValueError as err:
        return None, str(err)
