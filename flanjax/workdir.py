"""The run directory's recorded config: refuse a workdir made by another config, never delete one.

`prepare_workdir(workdir, run_config, overwrite=...)` records `config.json` (the RunConfig as a
dict, `RunConfig.to_dict()`); a later run compares against it, ignoring the keys that only extend
or re-evaluate a run (`RESUMABLE_KEYS`).

Example:
  >>> prepare_workdir("/tmp/w", rc, overwrite=False)       # records /tmp/w/config.json
  >>> config_differences("/tmp/w", rc.replace_key("train.steps", 10))   # extending is fine
  []
  >>> config_differences("/tmp/w", rc.replace_key("model.d_model", 64))
  ['model.d_model']
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import time
from typing import Any

from flanjax.config import RunConfig
from flanjax.errors import UsageError

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# RunConfig fields a resumed or extended run may change without being "a different config".
RESUMABLE_KEYS = (
  "train.steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.eval_every",
  "train.keep_checkpoints",
  "data.eval_mixtures",
  "data.data_dir",
  "eval",
  "mesh",
)


def _comparable(recorded: dict) -> dict:
  out = json.loads(json.dumps(recorded, default=str))
  for key in RESUMABLE_KEYS:
    *parents, leaf = key.split(".")
    node = out
    for part in parents:
      node = node.get(part, {})
    node.pop(leaf, None)
  return out


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
    return out
  return [] if a == b else [(prefix[:-1], a, b)]


def recorded_config(workdir: str | pathlib.Path) -> dict | None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  return json.loads(path.read_text()) if path.exists() else None


# What a checkpoint means: eval / export / predict must read it with the same values.
CHECKPOINT_KEYS = ("model", "init_from", "data.mixture", "data.vocab", "data.toy_vocab")


def config_changes(
  workdir: str | pathlib.Path, rc: RunConfig, only: tuple[str, ...] | None = None
) -> list[tuple[str, Any, Any]] | None:
  """[(field, recorded value, new value)] where `rc` differs (None: nothing recorded); `only`
  keeps the fields under those prefixes (e.g. CHECKPOINT_KEYS)."""
  recorded = recorded_config(workdir)
  if recorded is None:
    return None
  changes = _diff(_comparable(recorded), _comparable(rc.to_dict()))
  if only is not None:
    changes = [c for c in changes if any(c[0] == k or c[0].startswith(k + ".") for k in only)]
  return changes


def config_differences(workdir: str | pathlib.Path, rc: RunConfig) -> list[str] | None:
  """Fields in which `rc` differs from the one recorded in `workdir` (None: nothing recorded)."""
  changes = config_changes(workdir, rc)
  return None if changes is None else [key for key, _, _ in changes]


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 6) -> str:
  """`model.d_model: 128 -> 64; train.z_loss: 0.0001 -> 0.0` (at most `limit` of them)."""
  shown = [f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:limit]]
  more = f" (+{len(changes) - limit} more)" if len(changes) > limit else ""
  return "; ".join(shown) + more


def _aside_path(path: pathlib.Path) -> pathlib.Path:
  """Where `path` goes when it is moved aside: `<name>.old-<time>` beside it."""
  return path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")


def move_aside(path: pathlib.Path) -> pathlib.Path:
  """Renames `path` to `<name>.old-<time>` (never deletes); returns the new path."""
  aside = _aside_path(path)
  shutil.move(str(path), aside)
  return aside


def _contents(path: pathlib.Path) -> list[pathlib.Path]:
  """What the workdir holds besides its lock file."""
  return [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []


def check_workdir(workdir: str | pathlib.Path, rc: RunConfig, *, overwrite: bool) -> None:
  """Raises UsageError when `workdir` belongs to another config (and `overwrite` is off)."""
  path = pathlib.Path(workdir)
  changes = config_changes(path, rc)
  if changes and not overwrite:
    raise UsageError(
      f"workdir {workdir} was made by a different config ({describe_changes(changes)}); pass "
      "--overwrite to start afresh (the old workdir is moved aside, not deleted) or choose "
      "another --workdir"
    )
  if changes is None and _contents(path) and not overwrite:
    raise UsageError(
      f"workdir {workdir} is not empty and has no config.json from a flanjax run; pass "
      "--overwrite or choose another --workdir"
    )


def prepare_workdir(workdir: str | pathlib.Path, rc: RunConfig, *, overwrite: bool) -> None:
  """Records the config; refuses a workdir made by a different config unless `overwrite`.

  Call it only after every other check has passed, so a refused run records nothing. With
  `overwrite`, the previous run's files move to `<workdir>.old-<time>/` (the lock stays).
  """
  path = pathlib.Path(workdir)
  check_workdir(path, rc, overwrite=overwrite)
  changes = config_changes(path, rc)
  if changes or (changes is None and _contents(path)):
    aside = _aside_path(path)
    aside.mkdir(parents=True)
    for child in _contents(path):
      shutil.move(str(child), aside / child.name)
    print(f"moved the previous run to {aside}")
  path.mkdir(parents=True, exist_ok=True)
  (path / CONFIG_FILE).write_text(json.dumps(rc.to_dict(), indent=2, sort_keys=True))


class WorkdirLock:
  """An exclusive lock on a workdir for one run (taken by process 0): `<workdir>/.lock` holds
  the holder's host, pid and start time. A second run on the same workdir is refused naming the
  holder; a lock left by a dead process on this host is taken over with a message.

  Example:
    >>> with WorkdirLock("/tmp/run"):        # another `train` on /tmp/run now fails at once
    ...   pass
  """

  def __init__(self, workdir: str | pathlib.Path):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.held = False

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if not self._is_stale(holder):
          started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
          raise UsageError(
            f"workdir {self.path.parent} is in use by another run (host {holder.get('host')}, "
            f"pid {holder.get('pid')}, started {started}); wait for it, use another --workdir, "
            f"or, if that run is gone, delete {self.path}"
          ) from None
        print(
          f"taking over the lock of a dead run (pid {holder.get('pid')} on this host) in "
          f"{self.path.parent}"
        )
        self.path.unlink(missing_ok=True)
        continue
      with os.fdopen(fd, "w") as handle:
        json.dump(me, handle)
      self.held = True
      return
    raise UsageError(f"could not take the lock {self.path}: another run took it meanwhile")

  def _holder(self) -> dict[str, Any]:
    try:
      return json.loads(self.path.read_text() or "{}")
    except (OSError, ValueError):
      return {}  # half-written by a run that died while writing it

  @staticmethod
  def _is_stale(holder: dict[str, Any]) -> bool:
    if not holder:
      return True
    if holder.get("host") != socket.gethostname():
      return False  # cannot tell from here whether it is alive
    try:
      os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
      return True
    except (PermissionError, KeyError, ValueError, TypeError):
      return False
    return False

  def release(self) -> None:
    if self.held:
      self.path.unlink(missing_ok=True)
      self.held = False
