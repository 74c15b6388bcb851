"""One run per output folder: the lock is exclusive, names its holder, dies with it."""

import os
import signal
import subprocess
import sys

import pytest

from torchtune import UserError
from torchtune.training import OutputDirLock


def test_second_holder_is_refused_naming_folder_and_holder(tmp_path):
    out = tmp_path / "run"
    first = OutputDirLock(str(out))
    with pytest.raises(UserError) as e:
        OutputDirLock(str(out))
    message = str(e.value)
    assert str(out) in message and f"pid {os.getpid()}" in message
    assert "\n" not in message
    first.release()
    OutputDirLock(str(out)).release()  # free again once released


def test_lock_goes_with_a_killed_process(tmp_path):
    code = (
        "import sys, time; from torchtune.training import OutputDirLock; "
        f"OutputDirLock({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {proc.pid} "):
            OutputDirLock(str(tmp_path))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    OutputDirLock(str(tmp_path)).release()  # no stale lock after kill -9


def test_unwritable_parent_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create"):
        OutputDirLock(str(blocker / "run"))
