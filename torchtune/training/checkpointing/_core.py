"""What every checkpointer shares: the load/save contract, resume, and the training state.

All three share one contract (docs/design.md):

- ``load_checkpoint(stream_model=False) -> dict``: ``"model"`` in the internal layout; when
  resuming also the recipe state keys from ``recipe_checkpoint`` and ``"adapter"`` from
  ``adapter_checkpoint``. With ``stream_model=True``, ``"model"`` is an iterator of
  internal-layout dicts, one decoder layer each (``layer_groups``), each read from disk only
  when asked for: a consumer that drops each group before asking for the next never holds
  more than one layer of the file (QLoRA quantizes the base weights this way as they load).
- ``save_checkpoint(state_dict, epoch, intermediate_checkpoint=False, adapter_only=False,
  step=None)`` where ``state_dict`` holds:

  - ``"model"``: internal-layout weights (for LoRA, the merged weights);
  - ``"adapter"`` (LoRA): the adapter weights (``...lora_a.weight``/``...lora_b.weight``);
  - ``"adapter_config"`` (LoRA, optional): ``{"lora_alpha": float, "r": int,
    "target_modules": [internal names: q_proj, k_proj, v_proj, output_proj, w1, w2, w3,
    output], "use_dora": bool}``; ``r`` and ``target_modules`` are inferred from the adapter
    if absent, other keys are copied into peft's config. When present, the adapter is also
    written in HF peft format (a DoRA ``...magnitude`` as ``...lora_magnitude_vector``);
  - any other key: recipe state, written to ``recipe_state.pt`` when
    ``intermediate_checkpoint`` is True.

What a save writes, in this order, with ``root`` = ``output_dir`` (or
``output_dir/step_{step}`` if ``step`` is given; a step folder is built under a temporary
name and renamed into place complete):

===============  ==========================================================================
model            Meta: ``root/meta_model_{epoch}.pt`` (``.safetensors`` from Mistral's
                 ``consolidated.safetensors``) + params.json + tokenizer.model;
                 from N model-parallel files: ``root/meta_model_{epoch}/`` with the input's
                 N file names, split as Meta splits them, + params.json + tokenizer.model.
                 HF: ``output_dir/epoch_{epoch}/`` (``root`` itself for a step) with the
                 input's shard names, tensor->shard assignment, index json, and a copy of
                 every other file beside the input weights (config.json, tokenizer and
                 generation files ...; not weights, indexes, hidden files, subfolders).
                 TorchTune: ``root/torchtune_model_{epoch}.pt``. Tied types (LLAMA3_2)
                 write the output projection iff the input file had it.
adapter          ``root/adapter_{epoch}.pt`` (internal names)
peft adapter     ``root/adapter_{epoch}_peft/adapter_model.safetensors`` + adapter_config.json
                 (a folder of its own: an adapter_config.json inside the model folder
                 would make ``from_pretrained`` apply the adapter a second time)
recipe state     ``root/recipe_state.pt`` (intermediate only), with the save's id added
                 under ``"checkpoint_save_id"`` and its manifest (every file written
                 before it) under ``"checkpoint_manifest"``: its rename completes the save
manifest         ``root/checkpoint_manifest.json``, written last and only by saves that write
                 a recipe state or a step folder: every file the save wrote (relative
                 path, size, sampled sha256), epoch, step, save id, run id (``_manifest``)
===============  ==========================================================================

Each file is written atomically (see ``_io``). A save never replaces a file this run read,
nor a folder holding one (``_overwrite_guard``). Step folders written by this run (its run
id is in their manifest; a resumed run keeps the id of the run it resumes) beyond
``keep_last_n_checkpoints`` are deleted, oldest first, after the new one is in place.
"""

import inspect
import logging
import os
import re
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from torchtune._errors import UserFileNotFoundError, UserValueError
from torchtune.training._output_files import check_output_folder
from torchtune.training.checkpointing import _io, _manifest, _sidecars
from torchtune.training.checkpointing._overwrite_guard import (
    InputGuard,
    OutputLayout,
    refuse_inputs_in_output,
)
from torchtune.training.checkpointing._save_writer import SaveWriter
from torchtune.training.checkpointing._utils import (
    ADAPTER_CONFIG_KEY,
    ADAPTER_KEY,
    MANIFEST_KEY,
    MODEL_KEY,
    RECIPE_STATE_NAME,
    SAVE_ID_KEY,
    MODEL_TYPES,
    ModelType,
    get_converter,
)

log = logging.getLogger(__name__)

DOWNLOAD_RECORD_NAME = ".tune_download.json"  # {"repo_id", "revision"}, written by `tune download`

# Writes the model files of one save: (writer, is_step_save).
WriteModel = Callable[[SaveWriter, bool], None]


def expand_checkpoint_files(checkpoint_files: Any, checkpoint_dir: Optional[str] = None) -> Any:
    """torchtune 0.6.1's short form for many shards, expanded to the list of names::

        checkpoint_files:
          filename_format: model-{}-of-{}.safetensors
          max_filename: "00030"

    gives ``model-00001-of-00030.safetensors`` ... ``model-00030-of-00030.safetensors``.
    Any other value is returned unchanged.

    With ``checkpoint_dir``, each name is checked as it is made and the first one missing
    there is an error: a wrong ``max_filename`` ("10000000") fails at once instead of
    building millions of names. Without it, more than ``_MAX_SHARDS`` names is an error.
    """
    if not isinstance(checkpoint_files, Mapping):
        return checkpoint_files
    if set(checkpoint_files) != {"filename_format", "max_filename"}:
        raise UserValueError(
            "checkpoint_files: a mapping must have exactly the keys filename_format and "
            f"max_filename, got {sorted(checkpoint_files)}"
        )
    fmt, last = checkpoint_files["filename_format"], str(checkpoint_files["max_filename"])
    if not isinstance(fmt, str) or fmt.count("{}") != 2:
        raise UserValueError(
            f"checkpoint_files.filename_format must hold two '{{}}' (shard, count), got {fmt!r}"
        )
    if not last.isdigit() or int(last) < 1:
        raise UserValueError(f"checkpoint_files.max_filename must be a positive number, got {last!r}")
    if not isinstance(checkpoint_dir, (str, os.PathLike)) or not str(checkpoint_dir):
        checkpoint_dir = None  # (the checkpointer names a bad checkpoint_dir itself)
    if checkpoint_dir is None and int(last) > _MAX_SHARDS:
        raise UserValueError(
            f"checkpoint_files.max_filename {last!r} names more than {_MAX_SHARDS} shards"
        )
    names = []
    for i in range(1, int(last) + 1):
        name = fmt.format(str(i).zfill(len(last)), last)
        if checkpoint_dir is not None:
            path = os.path.join(str(checkpoint_dir), name)
            if not os.path.isfile(path):
                folder = os.path.dirname(path)
                raise UserFileNotFoundError(
                    f"checkpoint file {path} not found (shard {i} of the {int(last)} that "
                    f"checkpoint_files.filename_format {fmt!r} and max_filename {last!r} name); "
                    f"files in {folder}: {_io.list_dir(folder)}"
                )
        names.append(name)
    return names


# Without a folder to check the names against, the most the dict form may expand to (the
# largest published checkpoints have a few hundred shards).
_MAX_SHARDS = 100_000


def _path_list(checkpoint_files: Any, checkpoint_dir: str) -> list:
    checkpoint_files = expand_checkpoint_files(checkpoint_files, checkpoint_dir)
    if isinstance(checkpoint_files, (str, os.PathLike)):
        return [checkpoint_files]
    try:
        files = list(checkpoint_files)
    except TypeError:
        raise UserValueError(
            f"checkpoint_files must be a list of file names, got {checkpoint_files!r}"
        ) from None
    bad = [f for f in files if not isinstance(f, (str, os.PathLike)) or not str(f)]
    if bad:
        raise UserValueError(f"checkpoint_files must hold file names, got {bad[0]!r} in {files}")
    return files


def _warn_of_earlier_outputs(output_dir: str, layout: OutputLayout) -> None:
    """Say so when a new run's saves will replace an earlier run's files of the same names."""
    try:
        names = sorted(n for n in os.listdir(output_dir) if layout.replaced_entry(n))
    except OSError:
        return
    if names:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        log.warning(
            "output_dir %s holds checkpoints of an earlier run (%s): this run's saves replace "
            "those of the same names; choose another output_dir to keep them, or resume with "
            "resume_from_checkpoint=True", output_dir, shown,
        )


def _keep_last_n(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserValueError(f"keep_last_n_checkpoints must be None or >= 1, got {value!r}")
    return value


class CheckpointerCore:
    """Constructor checks, resume loading and the training-state half of a save.

    Each checkpointer holds one (composition, not inheritance) and adds its format's model
    reading and writing. ``layout`` names the model files and folders its saves write, so a
    run that would overwrite its own input is refused here, before anything is loaded.
    """

    def __init__(
        self,
        checkpoint_dir: str,
        checkpoint_files: Sequence[str],
        model_type: Union[ModelType, str],
        output_dir: str,
        adapter_checkpoint: Optional[str],
        recipe_checkpoint: Optional[str],
        resume_from_checkpoint: bool,
        keep_last_n_checkpoints: Optional[int],
        layout: OutputLayout,
    ) -> None:
        for name, value in (("checkpoint_dir", checkpoint_dir), ("output_dir", output_dir)):
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise UserValueError(f"checkpointer.{name} must be a folder path, got {value!r}")
        self.checkpoint_dir = str(checkpoint_dir)
        self.files = [self.resolve(f) for f in _path_list(checkpoint_files, self.checkpoint_dir)]
        if not self.files:
            raise UserValueError("checkpoint_files is empty: list at least one checkpoint file")
        for f in self.files:
            _io.require_file(f)
        self.model_type = ModelType.coerce(model_type)
        self.converter = get_converter(self.model_type)
        self.tied = MODEL_TYPES[self.model_type].tied_embeddings
        # Where transformers keeps the text decoder inside a multimodal model
        # ("model.language_model."), for the peft adapter's names; None: a text model.
        self.peft_text_module: Optional[str] = None
        self.output_dir = str(output_dir)
        check_output_folder(self.output_dir, "checkpointer.output_dir")
        self.resume = bool(resume_from_checkpoint)
        self.adapter_path = self.resolve(adapter_checkpoint) if adapter_checkpoint else None
        self.recipe_path = self.resolve(recipe_checkpoint) if recipe_checkpoint else None
        found_latest = self.resume and self.recipe_path is None
        if found_latest:
            # torchtune 0.6.1's form: resume_from_checkpoint alone resumes the latest save.
            self.recipe_path = _manifest.latest_recipe_state(self.output_dir)
            if self.recipe_path is None:
                raise UserValueError(
                    "resume_from_checkpoint is True but checkpointer.recipe_checkpoint is not set "
                    f"and output_dir {self.output_dir} holds no {RECIPE_STATE_NAME} to resume "
                    "from; point recipe_checkpoint at the one the run being resumed wrote"
                )
        self.keep_last_n = _keep_last_n(keep_last_n_checkpoints)
        self.download_record = self._read_download_record()

        self.run_id = uuid.uuid4().hex
        self.manifest: Optional[_manifest.Manifest] = None
        self._recipe_state: Optional[Dict[str, Any]] = None
        # The folder of the save this run resumed from (for the Ctrl-C message).
        self.latest: Optional[str] = None
        inputs = list(self.files)
        if self.resume:
            self.latest = os.path.dirname(os.path.abspath(self.recipe_path))
            self._recipe_state, self.manifest = self._read_recipe_state()
            if self.manifest is not None:
                self.run_id = self.manifest.run_id  # a resumed run is the same run
            if found_latest and self.manifest is not None:
                self._take_files_of(self.manifest)
                inputs = list(self.files)
            inputs += [p for p in (self.adapter_path, self.recipe_path) if p is not None]
        else:
            # Resuming from the run's own output is the documented workflow; otherwise a
            # checkpoint at a name the saves write would be destroyed by them.
            refuse_inputs_in_output(self.files, self.output_dir, layout)
            _warn_of_earlier_outputs(self.output_dir, layout)
        rewritable = [self.recipe_path] if self.resume else []
        self.guard = InputGuard(inputs, rewritable=rewritable)
        self.layout = layout

    def protect_inputs(self, paths: Iterable[str], copies: Optional[Dict[str, str]] = None) -> None:
        """Guard more files the run reads (tokenizer, data, a reference model) against every
        save, and refuse now, before training, where a save would replace one.

        Args:
            paths (Iterable[str]): the files.
            copies (Optional[Dict[str, str]]): files each save writes in ``output_dir`` as
                copies, name -> source (Meta's params.json and tokenizer.model).
        """
        paths = [p for p in paths if os.path.isfile(p)]
        if not self.resume:
            refuse_inputs_in_output(paths, self.output_dir, self.layout, what="input file")
        read = {os.path.realpath(p): p for p in paths}
        for name, src in (copies or {}).items():
            dest = os.path.join(self.output_dir, name)
            given = read.get(os.path.realpath(dest))
            if given is not None and not _io.same_content(src, dest):
                raise UserValueError(
                    f"This run would overwrite its own input: each save writes {dest} (a copy "
                    f"of {src}), which is {given}, a file this run reads; choose another "
                    "output_dir, or keep that file elsewhere"
                )
        self.guard.add(paths)

    def resolve(self, name: Union[str, os.PathLike]) -> str:
        """``name`` as a path: absolute as given, else inside ``checkpoint_dir``."""
        name = str(name)
        return name if os.path.isabs(name) else os.path.join(self.checkpoint_dir, name)

    def find_beside(self, name: str) -> Optional[str]:
        """``name`` next to the first checkpoint file, else in ``checkpoint_dir``."""
        for folder in (os.path.dirname(self.files[0]), self.checkpoint_dir):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
        return None

    def _read_download_record(self) -> Dict[str, str]:
        record = os.path.join(self.checkpoint_dir, DOWNLOAD_RECORD_NAME)
        return _sidecars.read_download_record(record) if os.path.isfile(record) else {}

    def load(self, model_groups: Callable[[], Iterator[Dict[str, torch.Tensor]]], stream_model: bool) -> Dict[str, Any]:
        """``load_checkpoint``'s result: the training state (checked before the model is
        read), and ``"model"``: ``model_groups()`` itself when streaming, else joined."""
        training_state = self.load_training_state()
        groups = model_groups()
        out: Dict[str, Any] = {MODEL_KEY: groups if stream_model else join_groups(groups)}
        out.update(training_state)
        return out

    def _take_files_of(self, manifest: _manifest.Manifest) -> None:
        """Resume the save ``manifest`` describes: its adapter (a LoRA save: the base model
        stays as configured), else its model files."""
        if manifest.adapter is not None:
            if self.adapter_path is None:
                self.adapter_path = manifest.real_path(manifest.adapter)
            what = f"adapter {self.adapter_path}"
        else:
            self.files = [manifest.real_path(f) for f in manifest.model_files]
            what = f"model {_manifest.describe_files(self.files)}"
        log.info("Resuming the latest save in output_dir: %s with %s", self.recipe_path, what)

    def _read_recipe_state(self) -> Tuple[Dict[str, Any], Optional[_manifest.Manifest]]:
        """The recipe state being resumed (memory-mapped) and the manifest of its save: the
        one it carries, else (written before manifests were embedded) the json beside it."""
        state = _io.torch_load(self.recipe_path, what="recipe checkpoint")
        if not isinstance(state, dict):
            raise UserValueError(
                f"Recipe checkpoint {self.recipe_path} holds a {type(state).__name__}, not a dict"
            )
        state = dict(state)
        embedded = state.pop(MANIFEST_KEY, None)
        if embedded is not None:
            manifest = _manifest.parse_manifest(
                embedded, self.recipe_path, f"The {MANIFEST_KEY} in {self.recipe_path}"
            )
            if manifest.save_id != state.get(SAVE_ID_KEY):
                raise UserValueError(
                    f"Recipe checkpoint {self.recipe_path} is inconsistent: its {MANIFEST_KEY} "
                    f"belongs to save {manifest.save_id[:8]}, not to {str(state.get(SAVE_ID_KEY))[:8]}"
                )
            return state, manifest
        manifest_path = _manifest.manifest_beside(self.recipe_path)
        if os.path.isfile(manifest_path):
            return state, _manifest.read_manifest(manifest_path)
        return state, None

    def load_training_state(self) -> Dict[str, Any]:
        """Recipe state (and adapter) to merge into ``load_checkpoint``'s result when resuming.

        Checks first that the recipe state, the model files and the adapter all come from
        one complete save (``_manifest.check_resume``); the save id and manifest are removed
        from the returned state.
        """
        if not self.resume:
            return {}
        state = dict(self._recipe_state)
        save_id = state.pop(SAVE_ID_KEY, None)
        _manifest.check_resume(self.recipe_path, save_id, self.manifest, self.files, self.adapter_path)
        if self.adapter_path is not None:
            state[ADAPTER_KEY] = _io.torch_load(self.adapter_path, what="adapter checkpoint")
        return state

    def save(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        step: Optional[int],
        write_model: Optional[WriteModel],
        heads: Optional[Dict[str, Optional[int]]],
        intermediate_checkpoint: bool,
    ) -> str:
        """Write everything into the right root; returns that root.

        Args:
            state_dict (Dict[str, Any]): as for ``save_checkpoint``.
            epoch (int): the epoch being saved.
            step (Optional[int]): global step for a step folder; None for an epoch save.
            write_model (Optional[WriteModel]): writes the model files (None: adapter only).
            heads (Optional[Dict[str, Optional[int]]]): num_heads/num_kv_heads/dim/head_dim
                for the peft adapter's layout; None when no params.json/config.json was found.
            intermediate_checkpoint (bool): also write the recipe state (and the manifest).
        """
        if write_model is not None and MODEL_KEY not in state_dict:
            raise ValueError(
                f"save_checkpoint needs state_dict[{MODEL_KEY!r}] unless adapter_only=True; "
                f"got keys {sorted(state_dict)}"
            )
        if write_model is None and ADAPTER_KEY not in state_dict:
            raise ValueError(f"adapter_only=True but state_dict has no {ADAPTER_KEY!r} entry")
        with _io.user_os_errors(self.output_dir):
            os.makedirs(self.output_dir, exist_ok=True)
        _io.remove_stale_temporaries(self.output_dir)
        save_id = uuid.uuid4().hex

        def write_all(writer: SaveWriter) -> None:
            root = writer.root
            if write_model is not None:
                write_model(writer, step is not None)
            if ADAPTER_KEY in state_dict:
                path = os.path.join(root, f"adapter_{epoch}.pt")
                writer.torch_save(state_dict[ADAPTER_KEY], path, role="adapter")
                if ADAPTER_CONFIG_KEY in state_dict:
                    self.write_peft(writer, state_dict, epoch, heads)
            if intermediate_checkpoint:
                recipe_state = {
                    k: v
                    for k, v in state_dict.items()
                    if k not in (MODEL_KEY, ADAPTER_KEY, ADAPTER_CONFIG_KEY)
                }
                recipe_state[SAVE_ID_KEY] = save_id
                # The recipe state names the files it pairs with: its atomic rename alone
                # completes the save, and until then the previous recipe state (and its
                # files, which carry other names) is untouched and still resumes.
                recipe_state[MANIFEST_KEY] = writer.manifest(epoch, step, save_id, self.run_id)
                path = os.path.join(root, RECIPE_STATE_NAME)
                writer.torch_save(recipe_state, path, role="recipe_state")
            if intermediate_checkpoint or step is not None:
                # The same record as json, listing the recipe state too: for people, and
                # for pruning step folders. A final save (no recipe state) leaves the
                # previous pair alone.
                writer.write_manifest(epoch, step, save_id, self.run_id)

        if step is None:
            root = self.output_dir
            write_all(SaveWriter(root, self.guard))
        else:
            root = os.path.join(self.output_dir, f"step_{step}")
            self.guard.check_folder(root)
            with _io.atomic_dir(root) as tmp:
                write_all(SaveWriter(tmp, self.guard, final_root=root))
            self.prune_step_dirs()
        log.info("Saved checkpoint for epoch %s%s to %s", epoch,
                 "" if step is None else f" step {step}", root)
        return root

    def latest_resumable(self) -> Optional[str]:
        """The folder of the newest complete save of this run on disk (what is there, even
        if a save was interrupted a moment ago), else the save it resumed from."""
        found = _manifest.latest_recipe_state(self.output_dir, run_id=self.run_id)
        return os.path.dirname(found) if found else self.latest

    def prune_step_dirs(self) -> None:
        """Delete this run's oldest step folders beyond ``keep_last_n`` (None keeps all)."""
        if self.keep_last_n is None:
            return
        ours = _manifest.step_dirs_of_run(self.output_dir, self.run_id)
        for _, path in ours[: max(len(ours) - self.keep_last_n, 0)]:
            log.info("Removing %s (keep_last_n_checkpoints=%s)", path, self.keep_last_n)
            try:
                _io.remove_dir(path)
            except OSError as err:  # the new checkpoint is complete: not worth stopping the run
                log.warning("Could not remove old step folder: %s", err)

    def write_peft(
        self,
        writer: SaveWriter,
        state_dict: Dict[str, Any],
        epoch: int,
        heads: Optional[Dict[str, Optional[int]]],
    ) -> None:
        """The adapter in HF peft format, in ``root/adapter_{epoch}_peft/``."""
        adapter = state_dict[ADAPTER_KEY]
        config = dict(state_dict[ADAPTER_CONFIG_KEY])
        check = getattr(self.converter, "peft_unsupported", None)
        unsupported = check(config) if check is not None else None
        if unsupported:  # no exact peft equal in the family's layout (Phi-3: see its key maps)
            log.warning("Not writing adapter_%s_peft: %s (adapter_%s.pt is saved)", epoch, unsupported, epoch)
            return
        ranks = {v.shape[0] for k, v in adapter.items() if k.endswith("lora_a.weight")}
        modules = []
        for k in adapter:
            m = re.search(r"(?:^|\.)(\w+)\.lora_a\.weight$", k)
            if m and m.group(1) not in modules:
                modules.append(m.group(1))
        if len(ranks) != 1:
            raise ValueError(f"Cannot write the peft adapter: lora_a ranks {sorted(ranks)} differ")
        rank = ranks.pop()
        if config.setdefault("r", rank) != rank:
            raise ValueError(f"adapter_config r={config['r']} but the adapter's lora_a rank is {rank}")
        config.setdefault("target_modules", modules)
        if "lora_alpha" not in config:
            raise ValueError("state_dict['adapter_config'] needs 'lora_alpha' to write the peft adapter")
        if heads is None:
            # Only an export: losing the epoch's recipe state over it would be worse.
            log.warning(
                "Not writing adapter_%s_peft: no params.json or config.json beside %s gives "
                "the head counts its layout needs (adapter_%s.pt is saved)",
                epoch, self.files[0], epoch,
            )
            return
        record = self.download_record
        config.setdefault(
            "base_model_name_or_path", record.get("repo_id") or os.path.abspath(self.checkpoint_dir)
        )
        if record.get("repo_id"):
            config.setdefault("revision", record["revision"])
        peft_config = self.converter.tune_to_peft_adapter_config(config)
        weights = self.converter.tune_to_peft_adapter_weights(adapter, **heads)
        if self.peft_text_module:
            weights, peft_config = _on_text_module(weights, peft_config, self.peft_text_module)
        with writer.folder(os.path.join(writer.root, f"adapter_{epoch}_peft")) as folder:
            writer.safetensors_save(weights, os.path.join(folder, "adapter_model.safetensors"))
            writer.json_save(peft_config, os.path.join(folder, "adapter_config.json"))

    def convert(
        self, fn: Callable, sd: Dict[str, torch.Tensor], source: str, user_input: bool = True, **kwargs
    ) -> Dict:
        """Run a key map, turning an unknown key into a model_type error naming ``source``.

        ``user_input``: ``sd`` came from the user's file (a UserValueError), not from the
        recipe's model (a plain ValueError: a bug).
        """
        rotary_dim = kwargs.pop("rotary_dim", None)
        if rotary_dim is not None:
            if "rotary_dim" not in inspect.signature(fn).parameters:
                raise UserValueError(
                    f"{source}: config.json's partial_rotary_factor (rotary_dim {rotary_dim}) is "
                    f"not implemented for model_type {self.model_type.name}"
                )
            kwargs["rotary_dim"] = rotary_dim
        try:
            return fn(sd, **kwargs)
        except ValueError as err:
            cls = UserValueError if user_input else ValueError
            raise cls(f"{source} does not match model_type {self.model_type.name}: {err}") from err


    def untie(self, model: Dict[str, torch.Tensor], source: str) -> bool:
        """For a tied model type, drop the file's copy of the output projection.

        Meta's Llama 3.2 ``consolidated.00.pth`` stores ``output.weight`` (equal to the
        embedding); transformers' safetensors of a tied model do not store ``lm_head.weight``.
        Returns whether ``model`` (internal names) had ``output.weight``, so a save can write
        the layout the input had.

        Raises:
            UserValueError: the copy differs from ``tok_embeddings.weight``: the checkpoint is
                not of a tied model.
        """
        if not self.tied or "output.weight" not in model:
            return False
        out, emb = model["output.weight"], model.get("tok_embeddings.weight")
        if emb is None or out.shape != emb.shape or not torch.equal(out, emb):
            raise UserValueError(
                f"{source} holds an output projection that differs from the token embedding, "
                f"but model_type {self.model_type.name} ties them: use a model_type with an "
                "untied output (e.g. LLAMA3)"
            )
        del model["output.weight"]
        return True

    def retie(self, model: Dict[str, torch.Tensor], with_output: bool) -> Dict[str, torch.Tensor]:
        """The internal state dict to convert for saving: for a tied model type whose input
        file had the output copy, ``output.weight`` is added back (a copy of the embedding:
        safetensors refuses shared storage, and a view would make torch.save share it)."""
        if not self.tied:
            return model
        if "output.weight" in model:
            raise ValueError(
                f"state_dict['model'] has 'output.weight', but model_type {self.model_type.name} "
                "ties the output projection to tok_embeddings.weight"
            )
        if not with_output:
            return model
        return dict(model, **{"output.weight": model["tok_embeddings.weight"].clone()})


def _on_text_module(
    weights: Dict[str, torch.Tensor], peft_config: Dict[str, Any], module: str
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A text decoder's peft adapter moved onto that decoder inside a multimodal model:
    ``base_model.model.model.layers...`` -> ``base_model.model.<module>layers...``, and
    ``target_modules`` a pattern matching only the decoder's projections (the vision
    tower has ``q_proj``/``v_proj`` of its own, which the adapter does not touch)."""
    moved = {re.sub(r"^base_model\.model\.model\.", f"base_model.model.{module}", k): v
             for k, v in weights.items()}
    names = "|".join(re.escape(n) for n in peft_config["target_modules"])
    config = dict(peft_config, target_modules=rf"^{re.escape(module)}.*\.({names})$")
    return moved, config


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_groups(keys: Iterable[str]) -> List[List[str]]:
    """``keys`` cut into the unit a streamed load reads at once: first every tensor outside
    the decoder layers (embedding, final norm, output: a tied model's copy is checked against
    the embedding within one group), then each decoder layer's, in layer order. Meta, HF and
    internal names all number their layers as ``layers.N.``."""
    rest: List[str] = []
    layers: Dict[int, List[str]] = {}
    for key in keys:
        found = _LAYER.search(key)
        if found is None:
            rest.append(key)
        else:
            layers.setdefault(int(found.group(1)), []).append(key)
    return ([rest] if rest else []) + [layers[n] for n in sorted(layers)]


def join_groups(groups: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The whole state dict from ``load_model_groups``."""
    out: Dict[str, torch.Tensor] = {}
    for group in groups:
        out.update(group)
    return out


def as_tensor_dict(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    """``obj`` (loaded from ``path``) if it is a flat dict of tensors; else a UserValueError."""
    if not isinstance(obj, dict):
        raise UserValueError(f"Checkpoint file {path} holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserValueError(f"Checkpoint file {path} entry {bad[0]!r} is not a tensor")
    return obj
