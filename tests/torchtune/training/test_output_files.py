"""A run never writes through a link another user planted in its output folder (issue 24,
item 3): the lock and appended logs refuse a symlink, files rewritten whole replace the
link itself, and a folder another user controls is refused before anything is written."""

import json
import os

import pytest
import torch

from torchtune import UserOSError
from torchtune.training import OutputDirLock
from torchtune.training._output_files import untrusted_part
from torchtune.training.metric_logging import DiskLogger, TensorBoardLogger


@pytest.fixture
def victim(tmp_path):
    """A file of the user's that a planted link points at."""
    path = tmp_path / "victim" / ".bashrc"
    path.parent.mkdir()
    path.write_text("precious\n")
    return path


def test_lock_file_symlink_is_refused_and_its_target_untouched(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tune.lock").symlink_to(victim)
    with pytest.raises(UserOSError) as err:
        OutputDirLock(str(out))
    msg = str(err.value)
    assert f"{out / '.tune.lock'} is a symlink (to {victim}); refusing to write through it" in msg
    assert "\n" not in msg
    assert victim.read_text() == "precious\n"


def test_disk_logger_replaces_a_config_link_and_refuses_a_log_link(tmp_path, victim):
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    (logs / "config.json").symlink_to(victim)
    logger = DiskLogger(str(logs))
    logger.log_config({"lr": 0.1})
    logger.close()
    assert not (logs / "config.json").is_symlink()
    assert json.loads((logs / "config.json").read_text()) == {"lr": 0.1}
    assert victim.read_text() == "precious\n"

    (logs / "log.jsonl").symlink_to(victim)
    with pytest.raises(UserOSError, match=r"log\.jsonl is a symlink .* refusing to write through it"):
        DiskLogger(str(logs), filename="log.jsonl")
    assert victim.read_text() == "precious\n"


def test_world_writable_folder_without_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UserOSError) as err:
        OutputDirLock(str(shared / "run"))
    assert f"output_dir {shared / 'run'}: {shared} is writable by every user (mode 777, no sticky bit)" in str(err.value)
    with pytest.raises(UserOSError, match="is writable by every user"):
        TensorBoardLogger(str(shared / "tb"))
    assert not (shared / "run").exists() and not (shared / "tb").exists()

    shared.chmod(0o1777)  # as /tmp: the sticky bit keeps others from replacing our entries
    OutputDirLock(str(shared / "run")).release()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder of another user needs root")
def test_folder_or_link_of_another_user_in_a_shared_folder_is_refused(tmp_path, victim):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    planted = tmp / "torchtune"  # another user made /tmp/torchtune before this run
    planted.mkdir()
    os.chown(planted, 4242, 4242)
    with pytest.raises(UserOSError, match=rf"{planted} is a folder owned by another user \(uid 4242\) in the shared folder {tmp}"):
        OutputDirLock(str(planted / "stories260K_lora"))
    link = tmp / "out"
    link.symlink_to(victim.parent)
    os.lchown(link, 4242, 4242)
    assert f"{link} is a symlink owned by another user" in untrusted_part(str(link / "run"))
    os.lchown(link, os.geteuid(), os.getegid())  # the user's own link is followed
    assert untrusted_part(str(link / "run")) is None
    assert untrusted_part(str(tmp / "mine" / "run")) is None  # created by this run: fine


def test_checkpoint_save_replaces_a_link_never_its_target(tmp_path, victim):
    from torchtune.training.checkpointing import FullModelTorchTuneCheckpointer

    model = {"tok_embeddings.weight": torch.ones(4, 2), "norm.scale": torch.ones(2)}
    torch.save(model, tmp_path / "m.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "torchtune_model_0.pt").symlink_to(victim)
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(out))
    ckpt.save_checkpoint({"model": model}, epoch=0)
    assert not (out / "torchtune_model_0.pt").is_symlink()
    assert torch.equal(torch.load(out / "torchtune_model_0.pt", weights_only=True)["norm.scale"], torch.ones(2))
    assert victim.read_text() == "precious\n"
