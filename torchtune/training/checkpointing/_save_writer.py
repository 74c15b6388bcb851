"""One save's writes: atomic, never over an input, and recorded for the manifest."""

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional

import torch

from torchtune.training.checkpointing import _io
from torchtune.training.checkpointing._manifest import fingerprint, manifest_dict
from torchtune.training.checkpointing._overwrite_guard import InputGuard
from torchtune.training.checkpointing._utils import MANIFEST_NAME


class SaveWriter:
    """Writes the files of one save and remembers each one (relative path, fingerprint, role).

    Args:
        root (str): the folder the save writes into now: ``output_dir``, or the temporary
            folder that becomes ``output_dir/step_{N}``.
        guard (InputGuard): refuses writes that would replace one of the run's inputs.
        final_root (Optional[str]): the name ``root`` will have once complete (default: root).
    """

    def __init__(self, root: str, guard: InputGuard, final_root: Optional[str] = None) -> None:
        self.root = root
        self._guard = guard
        # Temporary folder -> its final name, so the guard and the manifest see final paths.
        self._renames = {os.path.abspath(root): os.path.abspath(final_root or root)}
        self._final_root = os.path.abspath(final_root or root)
        self.files: Dict[str, Dict[str, Any]] = {}
        self.roles: Dict[str, List[str]] = {}

    def _final(self, path: str) -> str:
        path = os.path.abspath(path)
        for tmp in sorted(self._renames, key=len, reverse=True):
            if path == tmp or path.startswith(tmp + os.sep):
                return self._renames[tmp] + path[len(tmp):]
        return path

    def _record(self, path: str, role: Optional[str]) -> None:
        rel = os.path.relpath(self._final(path), self._final_root)
        self.files[rel] = fingerprint(path)
        if role is not None:
            self.roles.setdefault(role, []).append(rel)

    def torch_save(self, obj: Any, path: str, role: Optional[str] = None) -> None:
        """``torch.save`` ``obj`` to ``path`` atomically."""
        self._guard.check_file(self._final(path))
        _io.torch_save(obj, path)
        self._record(path, role)

    def safetensors_save(
        self, tensors: Dict[str, torch.Tensor], path: str,
        metadata: Optional[Dict[str, str]] = None, role: Optional[str] = None,
    ) -> None:
        """Write a safetensors file atomically."""
        self._guard.check_file(self._final(path))
        _io.safetensors_save(tensors, path, metadata)
        self._record(path, role)

    def json_save(self, obj: Any, path: str) -> None:
        """Write a JSON file atomically."""
        self._guard.check_file(self._final(path))
        _io.json_save(obj, path)
        self._record(path, None)

    def copy_file(self, src: str, path: str) -> None:
        """Copy ``src`` to ``path`` atomically (nothing to do when they are the same file)."""
        if not _io.same_content(src, path):  # else nothing is written
            self._guard.check_file(self._final(path))
        _io.copy_file(src, path)
        self._record(path, None)

    @contextlib.contextmanager
    def folder(self, final: str) -> Iterator[str]:
        """Build the folder ``final`` under a temporary name (yielded); it replaces ``final``
        whole when the block succeeds."""
        self._guard.check_folder(self._final(final))
        with _io.atomic_dir(final) as tmp:
            self._renames[os.path.abspath(tmp)] = self._final(final)
            yield tmp

    def manifest(self, epoch: int, step: Optional[int], save_id: str, run_id: str) -> Dict[str, Any]:
        """The manifest of everything written so far (plain data: it goes into recipe_state.pt)."""
        return manifest_dict(dict(self.files), dict(self.roles), epoch, step, save_id, run_id)

    def write_manifest(self, epoch: int, step: Optional[int], save_id: str, run_id: str) -> str:
        """Write ``checkpoint_manifest.json`` listing everything written so far; call it last."""
        manifest = self.manifest(epoch, step, save_id, run_id)
        path = os.path.join(self.root, MANIFEST_NAME)
        self._guard.check_file(self._final(path))
        _io.json_save(manifest, path)
        return path
