"""What every checkpointer shares: the load/save contract, resume, and the training state.

All three share one contract (docs/design.md):

- ``load_checkpoint() -> dict``: ``"model"`` in the internal layout; when resuming also the
  recipe state keys from ``recipe_checkpoint`` and ``"adapter"`` from ``adapter_checkpoint``.
- ``save_checkpoint(state_dict, epoch, intermediate_checkpoint=False, adapter_only=False,
  step=None)`` where ``state_dict`` holds:

  - ``"model"``: internal-layout weights (for LoRA, the merged weights);
  - ``"adapter"`` (LoRA): the adapter weights (``...lora_a.weight``/``...lora_b.weight``);
  - ``"adapter_config"`` (LoRA, optional): ``{"lora_alpha": float, "r": int,
    "target_modules": [internal names: q_proj, k_proj, v_proj, output_proj, w1, w2, w3,
    output]}``; ``r`` and ``target_modules`` are inferred from the adapter if absent. When
    present, the adapter is also written in HF peft format;
  - any other key: recipe state, written to ``recipe_state.pt`` when
    ``intermediate_checkpoint`` is True.

What a save writes, with ``root`` = ``output_dir`` (or ``output_dir/step_{step}`` if ``step``
is given; a step folder is built under a temporary name and renamed into place complete):

===============  ==========================================================================
model            Meta: ``root/meta_model_{epoch}.pt`` + params.json + tokenizer.model
                 HF: ``output_dir/epoch_{epoch}/`` (``root`` itself for a step) with the
                 input's shard names, tensor->shard assignment, index json, config.json
                 and tokenizer files. TorchTune: ``root/torchtune_model_{epoch}.pt``.
adapter          ``root/adapter_{epoch}.pt`` (internal names)
peft adapter     ``root/adapter_{epoch}_peft/adapter_model.safetensors`` + adapter_config.json
                 (a folder of its own: an adapter_config.json inside the model folder
                 would make ``from_pretrained`` apply the adapter a second time)
recipe state     ``root/recipe_state.pt`` (intermediate only; written last)
===============  ==========================================================================

Each file is written atomically (see ``_io``). Step folders beyond ``keep_last_n_checkpoints``
(oldest first) are deleted after the new one is in place.
"""

import logging
import os
import re
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from torchtune.training.checkpointing import _io
from torchtune.training.checkpointing._utils import (
    ADAPTER_CONFIG_KEY,
    ADAPTER_KEY,
    MODEL_KEY,
    ModelType,
    get_converter,
)

log = logging.getLogger(__name__)

RECIPE_STATE_NAME = "recipe_state.pt"
DOWNLOAD_RECORD_NAME = ".tune_download.json"  # {"repo_id", "revision"}, written by `tune download`


class CheckpointerCore:
    """Constructor checks, resume loading and the training-state half of a save.

    Each checkpointer holds one (composition, not inheritance) and adds its format's model
    reading and writing.
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
    ) -> None:
        self.checkpoint_dir = str(checkpoint_dir)
        if isinstance(checkpoint_files, (str, bytes)):
            checkpoint_files = [checkpoint_files]
        self.files = [self.resolve(f) for f in checkpoint_files]
        if not self.files:
            raise ValueError("checkpoint_files is empty: list at least one checkpoint file")
        for f in self.files:
            _io.require_file(f)
        self.model_type = ModelType.coerce(model_type)
        self.converter = get_converter(self.model_type)
        self.output_dir = str(output_dir)
        self.resume = bool(resume_from_checkpoint)
        self.adapter_path = self.resolve(adapter_checkpoint) if adapter_checkpoint else None
        self.recipe_path = self.resolve(recipe_checkpoint) if recipe_checkpoint else None
        if self.resume and self.recipe_path is None:
            raise ValueError(
                "resume_from_checkpoint is True but checkpointer.recipe_checkpoint is not set: "
                f"point it at the {RECIPE_STATE_NAME} written by the run being resumed"
            )
        if keep_last_n_checkpoints is not None and int(keep_last_n_checkpoints) < 1:
            raise ValueError(
                f"keep_last_n_checkpoints must be None or >= 1, got {keep_last_n_checkpoints}"
            )
        self.keep_last_n = keep_last_n_checkpoints

    def resolve(self, name: str) -> str:
        name = str(name)
        return name if os.path.isabs(name) else os.path.join(self.checkpoint_dir, name)

    def find_beside(self, name: str) -> Optional[str]:
        """``name`` next to the first checkpoint file, else in ``checkpoint_dir``."""
        for folder in (os.path.dirname(self.files[0]), self.checkpoint_dir):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
        return None

    def load_training_state(self) -> Dict[str, Any]:
        """Recipe state (and adapter) to merge into ``load_checkpoint``'s result when resuming."""
        if not self.resume:
            return {}
        state = _io.torch_load(self.recipe_path, what="recipe checkpoint")
        if not isinstance(state, dict):
            raise ValueError(
                f"Recipe checkpoint {self.recipe_path} holds a {type(state).__name__}, not a dict"
            )
        state = dict(state)
        if self.adapter_path is not None:
            state[ADAPTER_KEY] = _io.torch_load(self.adapter_path, what="adapter checkpoint")
        return state

    def save(
        self,
        state_dict: Dict[str, Any],
        epoch: int,
        step: Optional[int],
        write_model: Optional[Callable[[str, bool], None]],
        heads: Callable[[], Dict[str, int]],
        intermediate_checkpoint: bool,
    ) -> str:
        """Write everything into the right root; returns that root.

        ``write_model(root, is_step)`` writes the model files; ``heads()`` gives the
        num_heads/num_kv_heads/dim/head_dim needed for the peft adapter's layout.
        """
        if write_model is not None and MODEL_KEY not in state_dict:
            raise ValueError(
                f"save_checkpoint needs state_dict[{MODEL_KEY!r}] unless adapter_only=True; "
                f"got keys {sorted(state_dict)}"
            )
        if write_model is None and ADAPTER_KEY not in state_dict:
            raise ValueError(f"adapter_only=True but state_dict has no {ADAPTER_KEY!r} entry")
        os.makedirs(self.output_dir, exist_ok=True)
        _io.remove_stale_temporaries(self.output_dir)

        def write_all(root: str) -> None:
            if write_model is not None:
                write_model(root, step is not None)
            if ADAPTER_KEY in state_dict:
                _io.torch_save(state_dict[ADAPTER_KEY], os.path.join(root, f"adapter_{epoch}.pt"))
                if ADAPTER_CONFIG_KEY in state_dict:
                    self.write_peft(state_dict, root, epoch, heads)
            if intermediate_checkpoint:
                recipe_state = {
                    k: v
                    for k, v in state_dict.items()
                    if k not in (MODEL_KEY, ADAPTER_KEY, ADAPTER_CONFIG_KEY)
                }
                # Written last: its presence marks the rest of this save as complete.
                _io.torch_save(recipe_state, os.path.join(root, RECIPE_STATE_NAME))

        if step is None:
            write_all(self.output_dir)
            root = self.output_dir
        else:
            root = os.path.join(self.output_dir, f"step_{step}")
            with _io.atomic_dir(root) as tmp:
                write_all(tmp)
            _io.prune_step_dirs(self.output_dir, self.keep_last_n)
        log.info("Saved checkpoint for epoch %s%s to %s", epoch,
                 "" if step is None else f" step {step}", root)
        return root

    def write_peft(
        self, state_dict: Dict[str, Any], root: str, epoch: int, heads: Callable[[], Dict[str, int]]
    ) -> None:
        adapter = state_dict[ADAPTER_KEY]
        config = dict(state_dict[ADAPTER_CONFIG_KEY])
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
        record = self.download_record()
        config.setdefault(
            "base_model_name_or_path", record.get("repo_id") or os.path.abspath(self.checkpoint_dir)
        )
        if record.get("revision") and record.get("repo_id"):
            config.setdefault("revision", record["revision"])
        peft_config = self.converter.tune_to_peft_adapter_config(config)
        weights = self.converter.tune_to_peft_adapter_weights(adapter, **heads())
        folder = os.path.join(root, f"adapter_{epoch}_peft")
        _io.safetensors_save(weights, os.path.join(folder, "adapter_model.safetensors"))
        _io.json_save(peft_config, os.path.join(folder, "adapter_config.json"))

    def download_record(self) -> Dict[str, Any]:
        """What ``tune download`` recorded about checkpoint_dir (``repo_id``, ``revision``), or {}."""
        record = os.path.join(self.checkpoint_dir, DOWNLOAD_RECORD_NAME)
        return _io.load_json(record, what="download record") if os.path.isfile(record) else {}

    def convert(self, fn: Callable, sd: Dict[str, torch.Tensor], source: str, **kwargs) -> Dict:
        """Run a key map, turning an unknown key into a model_type error naming ``source``."""
        try:
            return fn(sd, **kwargs)
        except ValueError as err:
            raise ValueError(
                f"{source} does not match model_type {self.model_type.name}: {err}"
            ) from err


def as_tensor_dict(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise ValueError(f"Checkpoint file {path} holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"Checkpoint file {path} entry {bad[0]!r} is not a tensor")
    return obj


def heads_from_params(params_path: Optional[str], what: str) -> Dict[str, int]:
    if params_path is None:
        raise FileNotFoundError(f"{what} not found beside the checkpoint: needed for head counts")
    p = _io.load_json(params_path, what=what)
    missing = [k for k in ("n_heads", "dim") if k not in p]
    if missing:
        raise ValueError(f"{params_path} lacks {missing}, needed for head counts")
    return {"num_heads": p["n_heads"], "num_kv_heads": p.get("n_kv_heads") or p["n_heads"], "dim": p["dim"]}


def heads_from_hf_config(config_path: str) -> Dict[str, Optional[int]]:
    """num_heads/num_kv_heads/dim/head_dim from a transformers ``config.json``."""
    c = _io.load_json(config_path, what="config.json")
    missing = [k for k in ("num_attention_heads", "hidden_size") if k not in c]
    if missing:
        raise ValueError(f"{config_path} lacks {missing}, needed for head counts")
    n_h = c["num_attention_heads"]
    return {
        "num_heads": n_h,
        "num_kv_heads": c.get("num_key_value_heads") or n_h,
        "dim": c["hidden_size"],
        "head_dim": c.get("head_dim"),
    }
