"""The workdir: recorded config, moved aside never deleted, and one run at a time (the lock)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from flanjax.errors import UsageError
from flanjax.workdir import LOCK_FILE, WorkdirLock


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid  # exited and reaped: no such process now


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
  with WorkdirLock(tmp_path / "run"):
    holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(UsageError, match=rf"in use by another run \(host .*, pid {os.getpid()}"):
      WorkdirLock(tmp_path / "run").acquire()
  assert not (tmp_path / "run" / LOCK_FILE).exists()  # released
  WorkdirLock(tmp_path / "run").acquire()  # free again


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
  (tmp_path / LOCK_FILE).write_text(
    json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": 0})
  )
  lock = WorkdirLock(tmp_path)
  lock.acquire()
  assert "taking over the lock of a dead run" in capsys.readouterr().out
  assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
  lock.release()


def test_a_lock_held_on_another_host_is_never_taken(tmp_path):
  (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
  with pytest.raises(UsageError, match="host elsewhere, pid 1"):
    WorkdirLock(tmp_path).acquire()
