import importlib.util

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from torchtune.config import instantiate
from torchtune.training.metric_logging import (
    DiskLogger,
    StdoutLogger,
    TensorBoardLogger,
    WandBLogger,
)


def test_disk_logger_writes_records_as_data(tmp_path):
    logger = DiskLogger(tmp_path / "logs", filename="run.jsonl")
    logger.log("loss", torch.tensor(2.5), step=1)
    logger.log_dict({"loss": np.float32(1.25), "lr": 1e-4, "tokens": 96}, step=2)
    logger.close()
    assert logger.path == tmp_path / "logs" / "run.jsonl"
    assert DiskLogger.read(logger.path) == [
        {"step": 1, "loss": 2.5},
        {"step": 2, "loss": 1.25, "lr": 1e-4, "tokens": 96},
    ]
    with pytest.raises(RuntimeError, match="closed"):
        logger.log("loss", 1.0, step=3)


def test_disk_logger_appends_and_flushes_each_record(tmp_path):
    first = DiskLogger(tmp_path, filename="run.jsonl")
    first.log("loss", 3.0, step=1)
    # Readable before close: a killed run keeps its records.
    assert DiskLogger.read(first.path) == [{"step": 1, "loss": 3.0}]
    first.close()
    resumed = DiskLogger(tmp_path, filename="run.jsonl")
    resumed.log("loss", 2.0, step=2)
    resumed.close()
    assert [r["step"] for r in DiskLogger.read(first.path)] == [1, 2]


def test_disk_logger_default_filename_and_config(tmp_path):
    logger = DiskLogger(tmp_path)
    logger.log_config(OmegaConf.create({"output_dir": "/x", "lr": "${output_dir}/y"}))
    logger.close()
    assert logger.path.parent == tmp_path and logger.path.name.startswith("log_")
    assert logger.path.suffix == ".jsonl"
    assert (tmp_path / "config.json").read_text().count('"/x/y"') == 1


def test_logger_rejects_non_scalars(tmp_path):
    logger = DiskLogger(tmp_path, filename="x.jsonl")
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        logger.log("loss", torch.ones(2), step=1)
    with pytest.raises(TypeError, match="str"):
        logger.log("loss", "high", step=1)
    logger.close()


def test_disk_logger_from_config(tmp_path):
    cfg = OmegaConf.create(
        {
            "output_dir": str(tmp_path),
            "metric_logger": {
                "_component_": "torchtune.training.metric_logging.DiskLogger",
                "log_dir": "${output_dir}/logs",
            },
        }
    )
    logger = instantiate(cfg.metric_logger)
    assert isinstance(logger, DiskLogger)
    logger.log("loss", 1.0, step=0)
    logger.close()
    assert logger.path.parent == tmp_path / "logs"


def test_stdout_logger(capsys):
    cfg = {"_component_": "torchtune.training.metric_logging.StdoutLogger", "log_dir": "/unused"}
    logger = instantiate(cfg)
    assert isinstance(logger, StdoutLogger)
    logger.log_dict({"loss": torch.tensor(1.5), "lr": 2e-5}, step=3)
    logger.log("tokens_per_second", 100, step=4)
    logger.close()
    assert capsys.readouterr().out == "Step 3 | loss:1.5 lr:2e-05\nStep 4 | tokens_per_second:100\n"


def test_tensorboard_logger_writes_readable_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    for step, loss in enumerate([3.0, 2.5, 2.0]):
        logger.log_dict({"loss": torch.tensor(loss), "lr": 0.1 * step}, step=step)
    logger.log("grad_norm", 0.75, step=2)
    logger.close()

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "lr", "grad_norm"}
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 3.0), (1, 2.5), (2, 2.0)]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([0.0, 0.1, 0.2])
    assert [(e.step, e.value) for e in events.Scalars("grad_norm")] == [(2, 0.75)]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_logger_without_wandb_is_a_clear_import_error():
    with pytest.raises(ImportError, match="WandBLogger needs the wandb package"):
        WandBLogger(project="x")


def test_each_run_keeps_its_config_record(tmp_path):
    import json
    import time

    from torchtune.training.metric_logging import DiskLogger

    records = []
    for lr in (0.1, 0.2):  # two runs into one log_dir
        logger = DiskLogger(str(tmp_path), filename="log.jsonl")
        logger.log_config({"lr": lr})
        logger.close()
        records.append(tmp_path / f"config_{logger.run_stamp}.json")
        time.sleep(0.002)
    assert [json.loads(p.read_text()) for p in records] == [{"lr": 0.1}, {"lr": 0.2}]
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 0.2}  # the latest run's
