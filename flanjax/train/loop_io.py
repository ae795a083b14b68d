"""The training loop's I/O around the pure step: metrics.jsonl + TensorBoard, and the
SIGTERM / SIGINT flag that turns a preemption or Ctrl-C into "finish the step, save, return".

Example:
  >>> writer = MetricsWriter(pathlib.Path("/tmp/run"), resume_step=None)   # process 0 writes
  >>> writer.write(10, {"loss": 2.5}); writer.close()
  >>> with PreemptionFlag() as flag:                                         # doctest: +SKIP
  ...   flag.signal_name   # None until a SIGTERM/SIGINT arrives; the loop agrees on it
"""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import sys
import threading
import time
from typing import Any

import jax


class MetricsWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: pathlib.Path, *, resume_step: int | None):
    self.enabled = jax.process_index() == 0
    self.path = workdir / "metrics.jsonl"
    self._tensorboard = None
    if not self.enabled:
      return
    if resume_step is None and self.path.exists():
      # A run from step 0 (new, or its checkpoints are gone): keep the old records, apart.
      aside = self.path.with_name(f"{self.path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
      self.path.rename(aside)
      logging.warning("starting from step 0: moved the old %s aside to %s", self.path, aside.name)
    elif resume_step is not None and self.path.exists():
      # Steps after the restored checkpoint will be recomputed: drop their stale lines (and a
      # line cut short by a crash).
      kept = [
        line
        for line in self.path.read_text().splitlines()
        if (record_step := _record_step(line)) is not None and record_step <= resume_step
      ]
      self.path.write_text("".join(line + "\n" for line in kept))
    self._file = self.path.open("a")
    self._tensorboard = _import_summary_writer()(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": step, **scalars}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tensorboard.close()


def _record_step(line: str) -> int | None:
  """The step of one metrics.jsonl line; None for a blank or garbled one."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def _import_summary_writer():
  """tensorboardX's SummaryWriter, imported without TensorFlow and without torch.

  tensorboardX imports torch (seconds per process) only to accept torch tensors; we log floats,
  so torch is hidden during the import unless something already imported it.
  """
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return SummaryWriter


# Weakest first: when processes received different signals, the strongest wins (loop._agree).
SIGNALS = (None, "SIGTERM", "SIGINT")


class PreemptionFlag:
  """Set by SIGTERM or SIGINT; the loop checks it between steps (agreeing across processes).

  A SIGINT while a stop is already pending (Ctrl-C twice) raises KeyboardInterrupt at once,
  without a checkpoint.

  Example:
    >>> with PreemptionFlag() as flag:
    ...   os.kill(os.getpid(), signal.SIGINT)
    ...   flag.signal_name
    'SIGINT'
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self.requested:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt("second Ctrl-C: stopping at once, without saving a checkpoint")
    if SIGNALS.index(name) > SIGNALS.index(self.signal_name):
      self.signal_name = name
    logging.warning(
      "%s received: finishing the current step, then checkpointing%s",
      name,
      " (Ctrl-C again to stop at once, without saving)" if name == "SIGINT" else "",
    )

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
