"""Metric loggers: stdout, JSON lines and 0.6.1-style text on disk, TensorBoard event files and Weights & Biases.

Every logger has ``log(name, data, step)``, ``log_dict(payload, step)``, ``log_config(config)``
and ``close()``, so a recipe builds whichever one the config names::

    metric_logger:
      _component_: torchtune.training.metric_logging.DiskLogger
      log_dir: ${output_dir}/logs
"""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Union

import numpy as np
import torch

from torchtune.training._output_files import check_output_folder, open_append, write_text_atomically

log = logging.getLogger(__name__)

Scalar = Union[torch.Tensor, np.ndarray, np.generic, int, float]


def _to_python(data: Scalar) -> Union[int, float]:
    """A one-element tensor or array as a Python number, so it serialises as data."""
    if isinstance(data, torch.Tensor):
        if data.numel() != 1:
            raise ValueError(
                f"metric values must be scalars, got a tensor of shape {tuple(data.shape)}"
            )
        return data.item()
    if isinstance(data, (np.ndarray, np.generic)):
        if data.size != 1:
            raise ValueError(f"metric values must be scalars, got an array of shape {data.shape}")
        return data.item()
    if isinstance(data, (int, float)):  # bool is an int, and json keeps it a bool
        return data
    raise TypeError(
        f"metric values must be numbers or one-element tensors, got {type(data).__name__}"
    )


def _config_to_container(config: Any) -> Any:
    # Values read from the environment (tokens) are never written: see resolve_for_record.
    from torchtune.config import resolve_for_record

    return resolve_for_record(config)


class MetricLoggerInterface(Protocol):
    """What a recipe calls on its metric logger."""

    def log(self, name: str, data: Scalar, step: int) -> None:
        """Log one scalar ``data`` under ``name`` at ``step``."""

    def log_dict(self, payload: Mapping[str, Scalar], step: int) -> None:
        """Log several scalars at ``step``."""

    def log_config(self, config: Any) -> None:
        """Record the run's config (a DictConfig or a plain mapping)."""

    def close(self) -> None:
        """Flush and release files; further logging is an error."""


class DiskLogger:
    """Writes each step's metrics to disk, flushed as written, so a killed run keeps its log.

    Two forms, chosen by the file name's suffix:

    - JSON lines (``.jsonl``): ``{"step": 3, "loss": 1.25, "lr": 0.0001}``;
    - text (any other suffix), the lines torchtune 0.6.1 wrote and its users parse:
      ``Step 3 | loss:1.25 lr:0.0001``.

    Without ``filename`` both are written, ``log_<unix ms>.jsonl`` and ``log_<unix ms>.txt``
    side by side. :meth:`read` reads either form back. ``log_config`` writes the run's config
    as ``config_<unix ms>.json`` (one per run, never replaced) and ``config.json`` (the
    latest run's).

    Args:
        log_dir (Union[str, Path]): directory for the log; created if missing.
        filename (Optional[str]): file name inside ``log_dir``; see above. An existing
            file is appended to.

    Example:
        >>> logger = DiskLogger("/tmp/logs")
        >>> logger.log_dict({"loss": 1.25, "lr": 1e-4}, step=1)
        >>> logger.close()
        >>> DiskLogger.read(logger.path)
        [{'step': 1, 'loss': 1.25, 'lr': 0.0001}]
        >>> logger.text_path.read_text()
        'Step 1 | loss:1.25 lr:0.0001 \\n'
    """

    def __init__(self, log_dir: Union[str, Path], filename: Optional[str] = None) -> None:
        self.log_dir = Path(log_dir)
        check_output_folder(str(self.log_dir), "log_dir")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # This run's own mark: its log (unless filename names a shared one) and its config
        # record carry it, so a second run into the same log_dir replaces neither.
        self.run_stamp = str(int(time.time() * 1000))
        if filename is None:
            stem = f"log_{self.run_stamp}"
            names = [stem + ".jsonl", stem + ".txt"]
        else:
            names = [filename]
        paths = [self.log_dir / n for n in names]
        self.path = paths[0]  # the JSON-lines file when there is one
        self.text_path = next((p for p in paths if not _is_jsonl(p)), None)
        # Never through a symlink planted at the log's name.
        self._files = [(open_append(str(p)), _is_jsonl(p)) for p in paths]
        log.info("Writing metric logs to %s", ", ".join(str(p) for p in paths))

    def _write(self, step: int, metrics: dict[str, Union[int, float]]) -> None:
        for file, as_json in self._files:
            if file.closed:
                raise RuntimeError(f"DiskLogger for {self.path} is closed")
            if as_json:
                file.write(json.dumps({"step": int(step), **metrics}) + "\n")
            else:
                pairs = "".join(f"{name}:{value} " for name, value in metrics.items())
                file.write(f"Step {int(step)} | {pairs}\n")
            file.flush()

    def log(self, name: str, data: Scalar, step: int) -> None:
        self._write(step, {name: _to_python(data)})

    def log_dict(self, payload: Mapping[str, Scalar], step: int) -> None:
        self._write(step, {k: _to_python(v) for k, v in payload.items()})

    def log_config(self, config: Any) -> None:
        """Save the resolved config next to the log: ``config_<run stamp>.json``, kept for
        each run, and ``config.json``, the latest run's."""
        text = json.dumps(_config_to_container(config), indent=2, default=str) + "\n"
        for name in (f"config_{self.run_stamp}.json", "config.json"):
            # Written aside and renamed: a symlink there is replaced, not its target.
            write_text_atomically(str(self.log_dir / name), text)

    def close(self) -> None:
        for file, _ in self._files:
            if not file.closed:
                file.close()

    @staticmethod
    def read(path: Union[str, Path]) -> list[dict[str, Any]]:
        """The records of a DiskLogger file (either form), in the order written."""
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        if _is_jsonl(Path(path)):
            return [json.loads(line) for line in lines]
        return [_parse_text_line(line) for line in lines]


def _is_jsonl(path: Path) -> bool:
    return path.suffix in (".jsonl", ".json")


def _parse_text_line(line: str) -> dict[str, Any]:
    """``Step 3 | loss:1.25 lr:0.0001`` -> ``{"step": 3, "loss": 1.25, "lr": 0.0001}``."""
    head, _, body = line.partition(" | ")
    record: dict[str, Any] = {"step": int(head.removeprefix("Step "))}
    for pair in body.split():
        name, _, value = pair.rpartition(":")
        record[name] = json.loads(value) if value not in ("nan", "inf", "-inf") else float(value)
    return record


class StdoutLogger:
    """Prints ``Step 3 | loss:1.25 lr:0.0001`` lines to stdout.

    Args:
        log_dir (Optional[str]): ignored; accepted so a config can switch its ``_component_``
            between loggers without removing ``log_dir``.
    """

    def __init__(self, log_dir: Optional[str] = None) -> None:
        del log_dir

    @staticmethod
    def _format(value: Union[int, float]) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def log(self, name: str, data: Scalar, step: int) -> None:
        self.log_dict({name: data}, step)

    def log_dict(self, payload: Mapping[str, Scalar], step: int) -> None:
        fields = " ".join(f"{k}:{self._format(_to_python(v))}" for k, v in payload.items())
        sys.stdout.write(f"Step {step} | {fields}\n")
        sys.stdout.flush()

    def log_config(self, config: Any) -> None:
        del config  # the recipe already prints its config

    def close(self) -> None:
        sys.stdout.flush()


class TensorBoardLogger:
    """Writes TensorBoard event files with ``torch.utils.tensorboard.SummaryWriter``.

    Args:
        log_dir (Union[str, Path]): directory for the event files (``tensorboard --logdir``).
        **kwargs: passed on to ``SummaryWriter`` (e.g. ``flush_secs``).

    Raises:
        ImportError: if the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: Union[str, Path], **kwargs: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install tensorboard"
            ) from e
        self.log_dir = str(log_dir)
        check_output_folder(self.log_dir, "log_dir")
        os.makedirs(self.log_dir, exist_ok=True)
        self._writer = SummaryWriter(log_dir=self.log_dir, **kwargs)
        log.info("Writing TensorBoard logs to %s", self.log_dir)

    def log(self, name: str, data: Scalar, step: int) -> None:
        self._writer.add_scalar(name, _to_python(data), global_step=step)

    def log_dict(self, payload: Mapping[str, Scalar], step: int) -> None:
        for name, data in payload.items():
            self.log(name, data, step)

    def log_config(self, config: Any) -> None:
        text = json.dumps(_config_to_container(config), indent=2, default=str)
        # Markdown code block so TensorBoard's text tab keeps the indentation.
        self._writer.add_text("config", f"```\n{text}\n```")

    def close(self) -> None:
        self._writer.close()


class WandBLogger:
    """Logs to Weights & Biases.

    Args:
        project (str): the W&B project.
        entity (Optional[str]): the W&B user or team.
        group (Optional[str]): a group for related runs.
        log_dir (Optional[str]): local directory for W&B files.
        **kwargs: passed on to ``wandb.init``.

    Raises:
        ImportError: if the ``wandb`` package is not installed.
    """

    def __init__(
        self,
        project: str = "torchtune",
        entity: Optional[str] = None,
        group: Optional[str] = None,
        log_dir: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("WandBLogger needs the wandb package: pip install wandb") from e
        self._wandb = wandb
        self._run = wandb.run or wandb.init(
            project=project, entity=entity, group=group, dir=log_dir, **kwargs
        )

    def log(self, name: str, data: Scalar, step: int) -> None:
        self._run.log({name: _to_python(data)}, step=step)

    def log_dict(self, payload: Mapping[str, Scalar], step: int) -> None:
        self._run.log({k: _to_python(v) for k, v in payload.items()}, step=step)

    def log_config(self, config: Any) -> None:
        self._run.config.update(_config_to_container(config), allow_val_change=True)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
