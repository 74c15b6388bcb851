"""Keeping a run from overwriting the checkpoint it is fine-tuning.

A save replaces files and folders in ``output_dir`` by name (``meta_model_0.pt``,
``epoch_0/``, ``step_40/`` ...). If the model being read lives at one of those names, the
run destroys its own input: the shipped configs' resume recipe
(``checkpointer.checkpoint_dir=${output_dir}/epoch_0``) does exactly that when
``resume_from_checkpoint`` is forgotten. Two checks, both on real paths (symlinks resolved):

- when the checkpointer is built and not resuming, no checkpoint file may sit at (or inside)
  a name a save could write; resuming from the run's own output is the documented workflow,
  so it is allowed there;
- at save time, whatever the mode, no file written and no folder replaced may be or hold a
  file this run read. The one exception is the ``recipe_state.pt`` a resumed run started
  from: replacing it is how the run records its progress.
"""

import os
import re
from typing import Any, Iterable, List, Optional, Sequence

from torchtune._errors import UserValueError
from torchtune.training.checkpointing._utils import MANIFEST_NAME, NUMBER_RE, RECIPE_STATE_NAME

_COMMON_FILES = (rf"adapter_{NUMBER_RE}\.pt", re.escape(RECIPE_STATE_NAME), re.escape(MANIFEST_NAME))
_COMMON_FOLDERS = (rf"adapter_{NUMBER_RE}_peft", rf"step_{NUMBER_RE}")


class OutputLayout:
    """The names a checkpointer's saves write in ``output_dir``.

    Args:
        model_files (Sequence[str]): regexes of the model files a save writes in its root,
            e.g. ``meta_model_{N}.pt``.
        model_folders (Sequence[str]): regexes of model folders a save replaces, e.g.
            ``epoch_{N}``.
    """

    def __init__(self, model_files: Sequence[str] = (), model_folders: Sequence[str] = ()) -> None:
        self._files = re.compile("|".join((*model_files, *_COMMON_FILES)))
        self._folders = re.compile("|".join((*model_folders, *_COMMON_FOLDERS)))

    def replaced_entry(self, relative: str) -> Optional[str]:
        """The name in ``output_dir`` whose replacement destroys ``relative`` (a path inside
        ``output_dir``), or None if no save touches it."""
        parts = relative.split(os.sep)
        if len(parts) == 1 and self._files.fullmatch(parts[0]):
            return parts[0]
        if len(parts) > 1 and self._folders.fullmatch(parts[0]):
            return parts[0]
        return None


def _inside(path: str, folder: str) -> Optional[str]:
    """``path`` relative to ``folder`` if it lies inside it (both real paths), else None."""
    rel = os.path.relpath(path, folder)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel


def _shown(path: str) -> str:
    real = os.path.realpath(path)
    return path if real == os.path.abspath(path) else f"{path} (really {real})"


def refuse_inputs_in_output(
    inputs: Iterable[str], output_dir: str, layout: OutputLayout, what: str = "checkpoint file"
) -> None:
    """Fail when a save to ``output_dir`` would overwrite one of ``inputs``.

    Args:
        inputs (Iterable[str]): the files this run reads.
        output_dir (str): where its saves go.
        layout (OutputLayout): the names those saves write.
        what (str): what the inputs are, for the message.

    Raises:
        UserValueError: naming the input, the output name that would replace it, and the
            two ways out.
    """
    out = os.path.realpath(output_dir)
    for path in inputs:
        rel = _inside(os.path.realpath(path), out)
        entry = layout.replaced_entry(rel) if rel is not None else None
        if entry is None:
            continue
        target = os.path.join(output_dir, entry)
        verb = "is" if rel == entry else "holds"
        raise UserValueError(
            f"This run would overwrite its own input: saving to output_dir {output_dir} "
            f"replaces {target}, which {verb} {what} {_shown(path)}; set "
            "resume_from_checkpoint=True to resume from it, or choose another output_dir"
        )


def _entry(path: str) -> str:
    """The directory entry a write to ``path`` replaces: its folder resolved, its name kept
    (replacing a symlink replaces the link, not what it points to)."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


class InputGuard:
    """The save-time check: refuses to replace a file this run read, or a folder holding one.

    Args:
        inputs (Iterable[str]): every file the run read (checkpoint files; when resuming the
            adapter and recipe checkpoints too).
        rewritable (Iterable[str]): inputs a save may replace (the recipe state resumed from).
    """

    def __init__(self, inputs: Iterable[str], rewritable: Iterable[str] = ()) -> None:
        self._inputs = {os.path.realpath(p): p for p in inputs}
        self._rewritable = {os.path.realpath(p) for p in rewritable}

    @property
    def inputs(self) -> List[str]:
        """Every file guarded, as the run named it."""
        return list(self._inputs.values())

    def add(self, inputs: Iterable[str]) -> None:
        """Guard more files the run reads (tokenizer, data, a reference model)."""
        for path in inputs:
            self._inputs.setdefault(os.path.realpath(path), path)

    def check_file(self, final: str) -> None:
        """Raise UserValueError if writing ``final`` would replace an input file."""
        entry = _entry(final)
        if entry in self._inputs and entry not in self._rewritable:
            self._refuse(final, self._inputs[entry])

    def check_folder(self, final: str) -> None:
        """Raise UserValueError if replacing the folder ``final`` would delete an input."""
        entry = _entry(final)
        for real, given in self._inputs.items():
            if real == entry or _inside(real, entry) is not None:
                self._refuse(final, given)

    @staticmethod
    def _refuse(target: str, given: str) -> None:
        raise UserValueError(
            f"Refusing to save: writing {target} would replace {_shown(given)}, which this run "
            "read as its input; choose another output_dir (the input is left untouched)"
        )


def input_files_in_config(cfg: Any, output_dir: str, skip: Sequence[str] = ("checkpointer", "ref_checkpointer", "output_dir")) -> List[str]:
    """The files a run's config names that a save could reach: every string value (in
    mappings and lists, interpolations resolved) naming an existing file, and the files
    inside a named folder that lies within ``output_dir`` (a tokenizer folder, data). The
    checkpointers know their own inputs exactly, so their nodes are ``skip``ped.

    Args:
        cfg (Any): the run's config (a DictConfig or plain containers).
        output_dir (str): where the run's saves go.
        skip (Sequence[str]): top-level keys not to look in.

    Returns:
        List[str]: the paths, as named (relative ones relative to the working folder).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out_real = os.path.realpath(output_dir)
    found: List[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)
        elif isinstance(node, str) and node and len(node) < 4096 and "\0" not in node:
            if os.path.isfile(node):
                found.append(node)
            elif os.path.isdir(node) and _inside(os.path.realpath(node), out_real) is not None:
                for folder, _, names in os.walk(node):
                    found.extend(os.path.join(folder, n) for n in names)

    visit({k: v for k, v in cfg.items() if k not in skip} if isinstance(cfg, dict) else cfg)
    return found
