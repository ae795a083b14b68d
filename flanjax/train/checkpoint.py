"""The one module that talks to Orbax: save / restore / verify the train state with its metadata.

A checkpoint `checkpoints/<step>/` holds two items:
  * `state`: the sharded TrainState (each process writes its own shards; multi-host safe),
  * `extra`: JSON with the run config, the model shape, every process's data-stream state, the
    skip counters and a content fingerprint of every array
    (`{"config": {...}, "data_state": {...}, "consecutive_skips": 0, "finite": true,
    "fingerprints": {"algorithm": "fmix32-sum-2", "arrays": {".params['...']": "9f3c...", ...}}}`).

Nothing lost:
  * Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete; a step
    directory without Orbax's `_CHECKPOINT_METADATA` is moved aside as `<step>.incomplete-<time>`.
  * `restore_state` verifies what it read: unreadable files (truncated, missing, garbled JSON),
    a fingerprint that differs from the one recorded at save time (a flipped byte in a data
    file), or non-finite floats raise `CorruptCheckpointError` naming the step directory and the
    array or file; `quarantine` then renames the step `<step>.corrupt-<time>` (never deletes).
  * Rotation keeps the last `keep` steps and, beyond them, the newest *good* step: finite arrays
    and not written during a streak of skipped (non-finite) steps (`extra["consecutive_skips"]`).

The fingerprint of an array is two sums mod 2^32 of a bijective mix (murmur3's fmix32) of each
element's bits xor a hash of its index, computed on device as a global reduction: it does not
depend on the sharding, any single changed element always changes it, and it costs one pass over
the state at save and at restore (no host copy, no gather).

Example:
  >>> ckpt = Checkpointer("/tmp/run/checkpoints", keep=3)
  >>> ckpt.save(100, state, extra={"config": {...}, "consecutive_skips": 0})
  >>> ckpt.wait(); ckpt.latest_step()
  100
  >>> state = ckpt.restore_state(100, abstract_state_with_shardings)  # verified
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from flanjax.train import distributed

_FINALIZED_MARKER = "_CHECKPOINT_METADATA"
_ITEMS = ("state", "extra")
_ALGORITHM = "fmix32-sum-2"


class CorruptCheckpointError(ValueError):
  """A checkpoint that cannot be read or does not verify; the message names the file or array."""

  def __init__(self, message: str, *, step: int, path: pathlib.Path):
    super().__init__(message)
    self.step, self.path = step, path


class CheckpointDirectoryError(FileNotFoundError):
  """The checkpoint directory disappeared while the run was writing to it."""


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


# ---------------------------------------------------------------------- fingerprints
def _fmix32(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser: a bijection of uint32 that spreads every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _as_uint32(x: jax.Array) -> jax.Array:
  """The raw bits of `x` as uint32, element by element (64-bit values give a trailing [2])."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  """uint32[2] content hash of `x`, independent of how it is sharded."""
  bits = _as_uint32(x)
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(bits.ndim)):  # row-major linear index, built shard-locally
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(stride)
    stride = (stride * bits.shape[axis]) % 2**32
  lanes = []
  for multiplier, seed in ((0x9E3779B1, 0x85EBCA77), (0xC2B2AE3D, 0x27D4EB2F)):
    salt = _fmix32(index * jnp.uint32(multiplier) + jnp.uint32(seed))
    lanes.append(jnp.sum(_fmix32(bits ^ salt), dtype=jnp.uint32))
  return jnp.stack(lanes)


def _leaf_finite(x: jax.Array) -> jax.Array:
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.all(jnp.isfinite(x))
  return jnp.bool_(True)


def _fingerprint_leaves(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
  fingerprints = jnp.stack([_leaf_fingerprint(x) for x in leaves])  # [leaves, 2]
  finite = jnp.stack([_leaf_finite(x) for x in leaves])  # [leaves]
  return fingerprints, finite


@functools.cache
def _jitted_fingerprints(replicated: NamedSharding | None):
  if replicated is None:
    return jax.jit(_fingerprint_leaves)
  return jax.jit(_fingerprint_leaves, out_shardings=(replicated, replicated))


def fingerprints(tree: Any) -> tuple[dict[str, str], list[str]]:
  """({array path: 16 hex digits}, [paths of arrays holding NaN/Inf]) of a tree of jax arrays.

  A collective when the arrays span processes (every process gets the same answer).

  Example:
    >>> fingerprints({"w": jnp.ones(3)})
    ({"['w']": 'b22ce5063471c348'}, [])
    >>> fingerprints({"w": jnp.array([1.0, 1.0, jnp.nan])})
    ({"['w']": '9107e132857e58eb'}, ["['w']"])
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  if not flat:
    return {}, []
  names = [jax.tree_util.keystr(path) for path, _ in flat]
  leaves = [jnp.asarray(x) for _, x in flat]
  sharding = getattr(leaves[0], "sharding", None)
  if isinstance(sharding, NamedSharding):  # replicated results: readable on every process
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    with jax.set_mesh(sharding.mesh):
      hashes, finite = _jitted_fingerprints(replicated)(leaves)
  else:
    hashes, finite = _jitted_fingerprints(None)(leaves)
  hashes, finite = np.asarray(hashes), np.asarray(finite)
  table = {name: f"{int(a):08x}{int(b):08x}" for name, (a, b) in zip(names, hashes, strict=True)}
  return table, [name for name, ok in zip(names, finite, strict=True) if not ok]


def _describe(error: BaseException) -> str:
  """One line from an Orbax / TensorStore error chain: its innermost message, shortened."""
  chain = [error]
  while len(chain) < 20:
    last = chain[-1]
    cause = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
    if cause is None:
      break
    chain.append(cause)
  innermost = next((e for e in reversed(chain) if str(e).strip()), error)
  text = re.sub(r" \[tensorstore_spec.*", "", " ".join(str(innermost).split()))
  array = re.search(r"'path': '([^']+)/'", str(error))
  if "See full TensorStore details" in text and array:
    text = f"could not read array {array.group(1)!r}"
  return f"{type(innermost).__name__}: {text[:300]}"


# ---------------------------------------------------------------------- rotation
@dataclasses.dataclass
class _KeepLastAndGood:
  """Orbax preservation policy: the last `keep` steps, plus every step in `protected`."""

  keep: int
  protected: set[int] = dataclasses.field(default_factory=set)

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
    del context
    newest = sorted(info.step for info in checkpoints)[-self.keep :]
    return [info.step in newest or info.step in self.protected for info in checkpoints]


def _is_good(extra: dict[str, Any]) -> bool:
  """Finite arrays and not written during a run of skipped steps (older checkpoints: good)."""
  return extra.get("finite", True) and extra.get("consecutive_skips", 0) == 0


class Checkpointer:
  """Orbax CheckpointManager for (TrainState, JSON metadata) with verification and rotation."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"train.keep_checkpoints={keep} must be >= 1")
    self.directory = pathlib.Path(directory).absolute()
    self.moved_aside = quarantine_incomplete_steps(self.directory)
    self._policy = _KeepLastAndGood(keep)
    self._good: dict[int, bool] = {}  # step -> _is_good(its extra), filled lazily
    options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=async_save, create=True, preservation_policy=self._policy
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest finalised step, or None for a fresh directory."""
    return self._manager.latest_step()

  def newest_good_step(self) -> int | None:
    """The newest step that is finite and not from a streak of skipped steps (see `_is_good`)."""
    return next((s for s in reversed(self.all_steps()) if self._step_is_good(s)), None)

  def _step_is_good(self, step: int) -> bool:
    if step not in self._good:
      try:
        self._good[step] = _is_good(self.read_extra(step))
      except CorruptCheckpointError:
        self._good[step] = False
    return self._good[step]

  def save(self, step: int, state: Any, *, extra: dict[str, Any]) -> None:
    """Starts an async save of `state` and `extra` (JSON) at `step` (all processes call it).

    Adds `fingerprints` and `finite` to `extra`. Raises CheckpointDirectoryError when the
    checkpoint directory has vanished (deleted during the run).
    """
    self._check_directory(step)
    table, non_finite = fingerprints(state)
    if non_finite:
      logging.error("saving step %d with NaN/Inf in %s", step, ", ".join(non_finite[:5]))
    extra = {
      **extra,
      "finite": not non_finite,
      "fingerprints": {"algorithm": _ALGORITHM, "arrays": table},
    }
    self._good[step] = _is_good(extra)
    newest_good = step if self._good[step] else self.newest_good_step()
    self._policy.protected = {newest_good} if newest_good is not None else set()
    try:
      self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
        force=True,
      )
    except Exception as error:
      self._check_directory(step, error)
      raise

  def _check_directory(self, step: int | None, error: BaseException | None = None) -> None:
    if distributed.any_process(not self.directory.is_dir()):
      what = f"step {step} was not saved" if step is not None else "the last save may be lost"
      raise CheckpointDirectoryError(
        f"the checkpoint directory {self.directory} vanished during the run (deleted or "
        f"unmounted?); {what}. Restore it (or start again in a new --workdir): the run stops "
        "rather than train on without checkpoints."
      ) from error

  def read_extra(self, step: int) -> dict[str, Any]:
    """The JSON metadata of `step`, without touching the arrays; CorruptCheckpointError if bad."""
    path = self.directory / str(step) / "extra"
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
      extra = restored["extra"]
    except Exception as error:  # noqa: BLE001 — any failure to read means the file is bad
      raise CorruptCheckpointError(
        f"checkpoint {path}/metadata is unreadable ({_describe(error)})", step=step, path=path
      ) from error
    if not isinstance(extra, dict) or not extra:
      raise CorruptCheckpointError(
        f"checkpoint {path}/metadata is empty or not a JSON object", step=step, path=path
      )
    return extra

  def restore_state(self, step: int, abstract_state: Any, *, extra: dict | None = None) -> Any:
    """The verified state of `step`, restored into the shardings carried by `abstract_state`.

    Raises CorruptCheckpointError (naming the step directory and the file or array) when the
    arrays cannot be read, differ from their recorded fingerprints, or hold NaN/Inf.
    """
    path = self.directory / str(step) / "state"
    extra = self.read_extra(step) if extra is None else extra
    state, error = None, None
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
      )
      state = restored["state"]
    except Exception as caught:  # noqa: BLE001 — reported below, once every process agrees
      error = caught
    if distributed.any_process(error is not None):
      reason = _describe(error) if error is not None else "another process could not read it"
      raise CorruptCheckpointError(
        f"checkpoint {path} is unreadable ({reason})", step=step, path=path
      ) from error
    table, non_finite = fingerprints(state)
    recorded = extra.get("fingerprints")
    if recorded is None:
      logging.warning("checkpoint %s has no fingerprints (an older flanjax): not verified", path)
    else:
      saved = recorded["arrays"]
      wrong = sorted(k for k in table.keys() | saved.keys() if table.get(k) != saved.get(k))
      if wrong:
        raise CorruptCheckpointError(
          f"checkpoint {path} does not match the fingerprints recorded when it was saved "
          f"({len(wrong)} array(s) differ, e.g. {', '.join(wrong[:3])}): its data files were "
          "changed or damaged after the save",
          step=step,
          path=path,
        )
    if non_finite:
      raise CorruptCheckpointError(
        f"checkpoint {path} holds NaN/Inf in {len(non_finite)} array(s), e.g. "
        f"{', '.join(non_finite[:3])}",
        step=step,
        path=path,
      )
    return state

  def quarantine(self, step: int, reason: BaseException | str) -> pathlib.Path:
    """Renames step `step` to `<step>.corrupt-<time>` (process 0; all wait); returns the path."""
    source = self.directory / str(step)
    target = source.with_name(f"{step}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0 and source.exists():
      source.rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"flanjax_quarantine_corrupt_checkpoint_{step}")
    self._manager.reload()
    self._good.pop(step, None)
    logging.error(
      "CORRUPT CHECKPOINT: %s; moved aside to %s (not deleted) and ignored", reason, target
    )
    return target

  def wait(self) -> None:
    """Blocks until pending async saves are finalised."""
    try:
      self._manager.wait_until_finished()
    except Exception as error:
      self._check_directory(None, error)
      raise

  def close(self) -> None:
    self.wait()
    self._manager.close()
