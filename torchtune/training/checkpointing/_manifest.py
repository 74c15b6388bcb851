"""The checkpoint manifest: what one save wrote, so a resume uses one save's files only.

A save that writes a recipe state (and every step-folder save) records what it wrote::

    {"format": "torchtune-checkpoint-manifest-1",
     "save_id": "<uuid4 hex, also stored in recipe_state.pt>",
     "run_id": "<uuid4 hex of the run; a resumed run keeps it>",
     "epoch": 1, "step": null,
     "model_files": ["epoch_1/model-00001-of-00002.safetensors", ...],
     "adapter": "adapter_1.pt" or null, "recipe_state": "recipe_state.pt" or null,
     "fingerprint": "<FINGERPRINT_SCHEME>",
     "files": {"<every file the save wrote, relative to the root>":
               {"size": 123, "sampled_sha256": "<hex>"}}}

It is written twice. ``recipe_state.pt`` carries it (``"checkpoint_manifest"``, listing every
file written before the recipe state) together with the save id: the recipe state is the
last file of a save that matters, and its one atomic rename is what completes the save. A
crash at any instant before that rename leaves the previous ``recipe_state.pt`` with its own
manifest, whose files a save never replaces (they carry the previous epoch's names), so the
previous save still resumes; a crash after it leaves the new save complete.
``checkpoint_manifest.json`` (in the save's root, written after the recipe state, also
listing it) is the same record for people and for pruning step folders; a recipe state
written before manifests were embedded is checked against it instead.

Resuming checks that the model files (or, for LoRA, the adapter) being loaded are the ones
the recipe state's save lists, with the same fingerprint. So a save interrupted between
writing the model and the recipe state can never pair a new model with an old recipe state
(and train an epoch twice).
"""

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torchtune._errors import UserError, UserOSError, UserValueError
from torchtune.training.checkpointing import _io
from torchtune.training.checkpointing._utils import MANIFEST_KEY, MANIFEST_NAME, NUMBER_RE, RECIPE_STATE_NAME, SAVE_ID_KEY

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "torchtune-checkpoint-manifest-1"

_EDGE = 1 << 20  # first and last 1 MiB
_BLOCK = 1 << 16  # 64 KiB sampled blocks ...
_BLOCKS = 16  # ... evenly spaced between them
FINGERPRINT_SCHEME = "sha256 of the size, the first and last 1 MiB and 16 evenly spaced 64 KiB blocks"


def fingerprint(path: str) -> Dict[str, Any]:
    """A cheap identity for a (possibly multi-GB) file: its size and a sampled sha256.

    Reads at most about 3 MiB, whatever the file's size; a file written by another save (or
    truncated, or replaced) differs in size or in the sampled bytes. Not a defence against
    deliberate forgery, only against mix-ups.

    Args:
        path (str): the file.

    Returns:
        Dict[str, Any]: ``{"size": int, "sampled_sha256": str}``.
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256(f"{size}\0".encode())
    with open(path, "rb") as f:
        if size <= 2 * _EDGE + _BLOCKS * _BLOCK:
            for chunk in iter(lambda: f.read(_EDGE), b""):
                digest.update(chunk)
        else:
            last_block = size - _EDGE - _BLOCK
            offsets = [_EDGE + (last_block - _EDGE) * i // (_BLOCKS - 1) for i in range(_BLOCKS)]
            for offset, length in [(0, _EDGE), *((o, _BLOCK) for o in offsets), (size - _EDGE, _EDGE)]:
                f.seek(offset)
                digest.update(f.read(length))
    return {"size": size, "sampled_sha256": digest.hexdigest()}


def manifest_dict(
    files: Dict[str, Dict[str, Any]],
    roles: Dict[str, List[str]],
    epoch: int,
    step: Optional[int],
    save_id: str,
    run_id: str,
) -> Dict[str, Any]:
    """The manifest's JSON content (see the module docstring)."""
    return {
        "format": MANIFEST_FORMAT,
        "save_id": save_id,
        "run_id": run_id,
        "epoch": epoch,
        "step": step,
        "model_files": list(roles.get("model", [])),
        "adapter": (roles.get("adapter") or [None])[0],
        "recipe_state": (roles.get("recipe_state") or [None])[0],
        "fingerprint": FINGERPRINT_SCHEME,
        "files": files,
    }


@dataclass
class Manifest:
    """A checked ``checkpoint_manifest.json``; paths in it are relative to its folder."""

    path: str
    save_id: str
    run_id: str
    epoch: int
    step: Optional[int]
    model_files: List[str]
    adapter: Optional[str]
    files: Dict[str, Dict[str, Any]]

    def real_path(self, relative: str) -> str:
        """The real path of a file the manifest lists (relative to the manifest's folder)."""
        return os.path.realpath(os.path.join(os.path.dirname(self.path), relative))

    def describe(self) -> str:
        """``path (save 1a2b3c4d, epoch 1 step 40)`` for messages."""
        step = "" if self.step is None else f" step {self.step}"
        return f"{self.path} (save {self.save_id[:8]}, epoch {self.epoch}{step})"


def _relative_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and not os.path.isabs(value)
        and ".." not in re.split(r"[\\/]", value)
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_manifest(path: str) -> Manifest:
    """Read and check a ``checkpoint_manifest.json``.

    Raises:
        UserValueError: naming the file and what is wrong with it.
    """
    return parse_manifest(_io.load_json(path, what="checkpoint manifest"), path, f"Checkpoint manifest {path}")


def parse_manifest(raw: Any, path: str, source: str) -> Manifest:
    """Check a manifest's content (from a json file, or embedded in a recipe state).

    Args:
        raw (Any): the manifest as loaded.
        path (str): a file in the save's root; the listed names are relative to its folder.
        source (str): where ``raw`` came from, for messages.

    Raises:
        UserValueError: naming ``source`` and what is wrong with it.
    """

    def bad(problem: str) -> UserValueError:
        return UserValueError(f"{source} is malformed: {problem}")

    if not isinstance(raw, dict):
        raise bad(f"it is a {type(raw).__name__}, not a mapping")

    if raw.get("format") != MANIFEST_FORMAT:
        raise bad(f"format is {raw.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    for key in ("save_id", "run_id"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise bad(f"{key!r} must be a non-empty string, got {raw.get(key)!r}")
    if not _count(raw.get("epoch")) or not (raw.get("step") is None or _count(raw["step"])):
        raise bad(f"epoch/step must be counts, got {raw.get('epoch')!r}/{raw.get('step')!r}")
    files = raw.get("files")
    if not isinstance(files, dict):
        raise bad("'files' must be an object")
    for name, fp in files.items():
        if not _relative_name(name):
            raise bad(f"file name {name!r} is not a relative path inside the checkpoint folder")
        if not (isinstance(fp, dict) and _count(fp.get("size")) and isinstance(fp.get("sampled_sha256"), str)):
            raise bad(f"the fingerprint of {name!r} must be {{'size', 'sampled_sha256'}}, got {fp!r}")
    model_files = raw.get("model_files")
    if not isinstance(model_files, list) or any(f not in files for f in model_files):
        raise bad(f"'model_files' must list files from 'files', got {model_files!r}")
    for key in ("adapter", "recipe_state"):
        if raw.get(key) is not None and raw[key] not in files:
            raise bad(f"{key!r} {raw[key]!r} is not one of 'files'")
    return Manifest(
        path=path,
        save_id=raw["save_id"],
        run_id=raw["run_id"],
        epoch=raw["epoch"],
        step=raw.get("step"),
        model_files=list(model_files),
        adapter=raw.get("adapter"),
        files=files,
    )


def _some(names: List[str], n: int = 4) -> str:
    shown = ", ".join(names[:n]) if names else "no model files"
    return shown + (f", ... ({len(names)} files)" if len(names) > n else "")


def manifest_beside(recipe_path: str) -> str:
    """Where the manifest of the save that wrote ``recipe_path`` lives."""
    return os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(recipe_path))), MANIFEST_NAME)


def _check_fingerprint(path: str, relative: str, manifest: Manifest, recipe_path: str) -> None:
    try:
        now = fingerprint(path)
    except OSError as err:
        raise UserOSError(f"Cannot read {path} to check it against {manifest.path}: {err.strerror}") from err
    if now != manifest.files[relative]:
        raise UserValueError(
            f"Cannot resume: {path} has changed since the save that wrote {recipe_path} "
            f"(its size or sampled sha256 differs from {manifest.describe()}): it was "
            "overwritten or damaged after that save"
        )


def check_resume(
    recipe_path: str,
    save_id: Any,
    manifest: Optional[Manifest],
    checkpoint_files: Sequence[str],
    adapter_path: Optional[str],
) -> None:
    """Refuse to resume from files that do not all come from one complete save.

    Args:
        recipe_path (str): the ``recipe_state.pt`` being resumed.
        save_id (Any): the save id stored in it (None for a recipe state written before
            manifests existed: accepted with a warning).
        manifest (Optional[Manifest]): the manifest embedded in it, else the one beside it,
            if there is one.
        checkpoint_files (Sequence[str]): the model files being loaded.
        adapter_path (Optional[str]): the adapter being loaded (LoRA).

    Raises:
        UserValueError: naming the recipe state and the file that does not belong with it.
    """
    recipe_path = os.path.realpath(recipe_path)  # "epoch_1/../recipe_state.pt" named plainly
    if save_id is None:
        log.warning(
            "%s has no %s (it predates checkpoint manifests): cannot check that the model "
            "files being loaded come from the same save", recipe_path, SAVE_ID_KEY,
        )
        return
    if manifest is None:  # a recipe state written before manifests were embedded in it
        raise UserValueError(
            f"Cannot resume: {recipe_path} was written by save {str(save_id)[:8]} but "
            f"{manifest_beside(recipe_path)} is missing, so nothing says which model files "
            f"belong with it; copy the {MANIFEST_NAME} written beside it, or start a new run"
        )
    if manifest.save_id != save_id:
        raise UserValueError(
            f"Cannot resume: {recipe_path} (save {str(save_id)[:8]}) and "
            f"{manifest.describe()} come from different saves: a save was interrupted "
            "between writing one and the other; resume from a complete checkpoint (e.g. a "
            "step folder) or start a new run"
        )
    listed = {manifest.real_path(rel): rel for rel in manifest.files}
    if manifest.adapter is None:
        if adapter_path is not None:
            raise UserValueError(
                f"Cannot resume: adapter_checkpoint {adapter_path} was given but the save that "
                f"wrote {recipe_path} wrote no adapter ({manifest.describe()})"
            )
        for path in checkpoint_files:
            rel = listed.get(os.path.realpath(path))
            if rel not in manifest.model_files:
                raise UserValueError(
                    f"Cannot resume: checkpoint file {path} is not from the save that wrote "
                    f"{recipe_path}: its manifest {manifest.describe()} lists "
                    f"{_some(manifest.model_files)}; "
                    "point checkpoint_dir/checkpoint_files at that save's model"
                )
            _check_fingerprint(path, rel, manifest, recipe_path)
        return
    expected = manifest.real_path(manifest.adapter)
    if adapter_path is None:
        raise UserValueError(
            f"Cannot resume: the save that wrote {recipe_path} is a LoRA save: set "
            f"checkpointer.adapter_checkpoint to its adapter {expected} ({manifest.describe()})"
        )
    if os.path.realpath(adapter_path) != expected:
        raise UserValueError(
            f"Cannot resume: adapter_checkpoint {adapter_path} is not the adapter of the save "
            f"that wrote {recipe_path}: {manifest.describe()} lists {expected}"
        )
    _check_fingerprint(adapter_path, manifest.adapter, manifest, recipe_path)
    for path in checkpoint_files:
        if listed.get(os.path.realpath(path)) in manifest.model_files:
            raise UserValueError(
                f"Cannot resume: checkpoint file {path} is the merged model of the LoRA save "
                f"that wrote {recipe_path}; loading it with the adapter would apply the adapter "
                "twice: point checkpoint_files at the base model"
            )


def step_dirs_of_run(output_dir: str, run_id: str) -> List[Tuple[int, str]]:
    """``(step, path)`` of the step folders in ``output_dir`` written by run ``run_id``, oldest
    first. Anything else named like one (``step_01``, ``step_5_backup``, a ``step_7``
    without a manifest of this run, a symlink) is left out; it never fails."""
    found = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(rf"step_({NUMBER_RE})", name)
        path = os.path.join(output_dir, name)
        if m is None or os.path.islink(path) or not os.path.isfile(os.path.join(path, MANIFEST_NAME)):
            continue
        try:
            manifest = read_manifest(os.path.join(path, MANIFEST_NAME))
        except (UserError, OSError) as err:
            log.warning("Not pruning %s: %s", path, err)
            continue
        if manifest.run_id == run_id:
            found.append((int(m.group(1)), path))
    return sorted(found)


def describe_files(paths: Sequence[str]) -> str:
    """``a, b, ... (N files)`` for log lines."""
    return _some(list(paths))


def latest_recipe_state(output_dir: str, run_id: Optional[str] = None) -> Optional[str]:
    """The ``recipe_state.pt`` of the newest save in ``output_dir`` (its root, or a step
    folder), by the epoch and step its manifest records: an epoch-end save comes after the
    step saves of its epoch. With ``run_id``, only that run's saves count. None if there
    is none."""
    candidates = [os.path.join(output_dir, RECIPE_STATE_NAME)]
    if os.path.isdir(output_dir):
        candidates += [
            os.path.join(output_dir, name, RECIPE_STATE_NAME)
            for name in os.listdir(output_dir)
            if re.fullmatch(rf"step_{NUMBER_RE}", name)
        ]
    best: Optional[Tuple[Tuple[int, int, int], str]] = None
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            state = _io.torch_load(path, what="recipe checkpoint")
            embedded = state.get(MANIFEST_KEY) if isinstance(state, dict) else None
            manifest = parse_manifest(embedded, path, path) if embedded is not None else read_manifest(
                manifest_beside(path)
            )
        except (UserError, OSError) as err:
            log.warning("Not resuming from %s: %s", path, err)
            continue
        if run_id is not None and manifest.run_id != run_id:
            continue
        key = (manifest.epoch, 1 if manifest.step is None else 0, manifest.step or 0)
        if best is None or key > best[0]:
            best = (key, path)
    return None if best is None else best[1]
