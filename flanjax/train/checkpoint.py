"""The one module that talks to Orbax: save / restore the train state with its metadata.

A checkpoint `checkpoints/<step>/` holds two items:
  * `state`: the sharded TrainState (each process writes its own shards; multi-host safe),
  * `extra`: JSON with the run config, the model shape and every process's data-stream state
    (`{"config": {...}, "model": {...}, "data_states": [process 0 state, process 1 state, ...]}`).

Saves are asynchronous (Orbax copies to host before `save` returns, so the next step may donate
the state buffers); only the last `keep` checkpoints are kept. Orbax writes a step into a
`<step>.orbax-checkpoint-tmp-*` directory and renames it when complete, so a crash mid-save
leaves a temporary directory that is never restored. A step directory that lacks Orbax's
`_CHECKPOINT_METADATA` (copied by hand, truncated) is moved aside as `<step>.incomplete-<time>`
and ignored too.

Example:
  >>> ckpt = Checkpointer("/tmp/run/checkpoints", keep=3)
  >>> ckpt.save(100, state, extra={"config": {...}, "model": {...}, "data_states": [...]})
  >>> ckpt.latest_step()
  100
  >>> state = ckpt.restore_state(100, abstract_state_with_shardings)
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

_FINALIZED_MARKER = "_CHECKPOINT_METADATA"
_ITEMS = ("state", "extra")


def quarantine_incomplete_steps(directory: str | pathlib.Path) -> list[pathlib.Path]:
  """Renames numeric step directories that Orbax did not finalise; returns their new paths.

  Runs on process 0 only; every process waits for it.
  """
  directory = pathlib.Path(directory)
  moved = []
  if jax.process_index() == 0 and directory.is_dir():
    for child in sorted(directory.iterdir()):
      if not (child.is_dir() and child.name.isdigit()):
        continue
      complete = (child / _FINALIZED_MARKER).exists() and all(
        (child / item).is_dir() for item in _ITEMS
      )
      if not complete:
        target = child.with_name(f"{child.name}.incomplete-{int(time.time())}")
        child.rename(target)
        logging.warning(
          "checkpoint %s is incomplete (no %s); moved aside to %s and ignored",
          child,
          _FINALIZED_MARKER,
          target.name,
        )
        moved.append(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("flanjax_quarantine_incomplete_checkpoints")
  return moved


class Checkpointer:
  """Orbax CheckpointManager for (TrainState, JSON metadata), keeping the last `keep` steps."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"train.keep_checkpoints={keep} must be >= 1")
    self.directory = pathlib.Path(directory).absolute()
    self.moved_aside = quarantine_incomplete_steps(self.directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=async_save, create=True
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest finalised step, or None for a fresh directory."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any, *, extra: dict[str, Any]) -> None:
    """Starts an async save of `state` and `extra` (JSON) at `step` (all processes call it)."""
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
      force=True,
    )

  def read_extra(self, step: int) -> dict[str, Any]:
    """The JSON metadata of `step`, without touching the arrays."""
    restored = self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    return restored["extra"]

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores the state of `step` straight into the shardings carried by `abstract_state`."""
    restored = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    return restored["state"]

  def wait(self) -> None:
    """Blocks until pending async saves are finalised."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
