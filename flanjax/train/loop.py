"""The training loop: sharded state, jitted step, logging, Orbax checkpoints, preemption, resume.

Entry point for `tools/launch.py`:

    final_metrics = train(run_config, workdir, batch_iter, eval_fn=None)

* `run_config`: a `flanjax.config.RunConfig` (the CLI reads the config file into it).
* `batch_iter`: this process's stream of numpy batches (EncDecFeatureConverter keys, rows =
  train.batch_size / process_count) with `get_state()` / `set_state(dict)`; its state goes into
  every checkpoint, so a resumed run sees exactly the batches an uninterrupted one would. When
  every process reports the same state (a global stream, as flanjax's pipeline and
  SyntheticTask), it is stored once (`extra["data_state"]`) and any process count may resume it;
  otherwise the per-process list (`extra["data_states"]`) needs the same count.
* `eval_fn(step, params) -> dict`: called on every process every `train.eval_every` steps; the
  numbers it returns are logged as `eval/<name>`.

Workdir: `checkpoints/` (Orbax; resumed from automatically), `metrics.jsonl`, `tensorboard/`.
Every `train.log_every` steps process 0 writes one record: step, loss / cross_entropy / z_loss /
grad_norm (means over the interval), learning_rate (at the last step), non_finite_skips,
tokens_per_second (non-padding input + target tokens of the global batch per second of wall
time), steps_per_second and mfu (flanjax/train/flops.py FLOPs over the peak: the datasheet for
known accelerators, else a measured f32 matmul, or `train.peak_flops_per_device`), and prints a
progress line with the ETA. On resume, records past the restored step are dropped (they are
recomputed identically); a run that starts from step 0 moves an old metrics.jsonl aside
(`metrics.jsonl.old-<time>`).
Resume restores the newest checkpoint that verifies (flanjax/train/checkpoint.py); corrupt ones
are moved aside as `<step>.corrupt-<time>`, loudly.
Every step the processes agree (one small all-gather, after fetching the batch and before the
step) on three things: a signal received, a batch iterator that ended, one that raised. An
iterator that ended on every process ends the run (`data_exhausted=True`, saved); on some only,
or one that raised, stops every process with DataStreamError naming the process and step (on
the raising process its own error is chained), without saving that step: no process is left
waiting in a collective (a single process just raises the iterator's error). Any error leaving
`train` in a multi-process run also ends the process at exit without jax.distributed's shutdown
barrier (`distributed.exit_without_barrier_at_exit`), so a process failing alone for another
reason (eval, a crash) brings the others down at once instead of leaving them in a collective.
SIGTERM (preemption) or SIGINT (Ctrl-C): seen at the next agreement, the step after it finishes
(the batch is already fetched on every process), a checkpoint is written and
`train` returns `preempted=True, signal="SIGTERM" | "SIGINT"` (the launcher exits 0 for SIGTERM,
130 for SIGINT); running again resumes from it. A second Ctrl-C stops at once, without saving.
Non-finite steps: `train.non_finite="skip"` drops the update (counted in `non_finite_skips`);
`train.max_consecutive_skips` skipped steps in a row stop the run (NonFiniteLossError) without
saving, naming the last good checkpoint; `"stop"` saves and raises at the first one.

Example:
  >>> data = SyntheticTask(batch_size=8, input_length=32, target_length=16, vocab_size=512)
  >>> train(RunConfig.from_config_dict(config), "/tmp/run", data)["step"]
  100
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from flanjax import partitioning
from flanjax.config import RunConfig
from flanjax.model import t5
from flanjax.train import distributed, flops
from flanjax.train.checkpoint import Checkpointer
from flanjax.train.loop_io import SIGNALS, MetricsWriter, PreemptionFlag
from flanjax.train.optim import make_optimizer
from flanjax.train.state import (
  TrainState,
  abstract_run_state,
  create_train_state,
  model_shape,
  restore_latest,
)
from flanjax.train.step import BATCH_KEYS, PACKING_KEYS, jit_run_train_step

_AVERAGED = ("loss", "cross_entropy", "z_loss", "grad_norm")


class NonFiniteLossError(FloatingPointError):
  """A non-finite step under `train.non_finite="stop"` (after saving), or a streak of
  `train.max_consecutive_skips` skipped steps (without saving); the message tells the whole story.
  """


class DataStreamError(RuntimeError):
  """A process's batch iterator ended early or raised: every process stops with this message."""


# Data status per process, gathered with the signal code at every step (`_agree`).
_DATA_OK, _DATA_ENDED, _DATA_FAILED = 0, 1, 2


def _fetch(batch_iter, rows: int, step: int) -> tuple[dict | None, int, BaseException | None]:
  """(this process's checked batch, data status, the error it raised if any)."""
  try:
    return _local_batch(next(batch_iter), rows, step), _DATA_OK, None
  except StopIteration:
    return None, _DATA_ENDED, None
  except Exception as error:  # noqa: BLE001 — carried to every process by the agreement
    return None, _DATA_FAILED, error


def _agree(signal_name: str | None, status: int) -> tuple[str | None, np.ndarray]:
  """(strongest signal any process received, every process's data status): a collective."""
  codes = distributed.gather_ints([SIGNALS.index(signal_name), status])  # [processes, 2]
  return SIGNALS[int(codes[:, 0].max())], codes[:, 1]


def _data_stream_error(
  statuses: np.ndarray, error: BaseException | None, step: int, total: int, saved: list[int]
) -> BaseException | None:
  """The error every process stops with when a batch iterator failed or ended on some processes
  only (None when all ended together: the run just ends). Collective when one failed (its
  message is gathered); the caller chains a process's own error to it.

  Example: statuses [0, 1] at step 6 of 10 -> "the batch iterator of process(es) [1] of 2 ended
  at step 7 of 10 while the others still had batches: ..."
  """
  failed = [int(i) for i in np.flatnonzero(statuses == _DATA_FAILED)]
  ended = [int(i) for i in np.flatnonzero(statuses == _DATA_ENDED)]
  count = len(statuses)
  last = f"the last checkpoint is step {saved[-1]}" if saved else "no checkpoint was written"
  if failed:
    messages = distributed.gather_json(f"{type(error).__name__}: {error}" if error else None)
    first = failed[0]
    return DataStreamError(
      f"process {first} of {count} failed to fetch the batch of step {step + 1} of {total}: "
      f"{messages[first]}"
      + (f" (processes {failed} failed)" if len(failed) > 1 else "")
      + f"; every process stopped without saving this step ({last})"
    )
  if len(ended) < count:
    return DataStreamError(
      f"the batch iterator of process(es) {ended} of {count} ended at step {step + 1} of "
      f"{total} while the others still had batches: a global batch needs every process's rows. "
      f"Every process stopped without saving this step ({last}); give every process a stream "
      "of the same length (flanjax's pipeline never ends)"
    )
  return None


class _SkipStreak:
  """Counts skipped (non-finite) steps in a row from each step's `is_finite` flag.

  Flags are fetched one step late (`resolve(lag=1)`), so the host never waits for the step it
  just dispatched. `resolve` returns the step at which `limit` steps in a row were skipped.

  Example: limit 2, flags of steps 4, 5, 6 = True, False, False -> resolve() == 6.
  """

  def __init__(self, limit: int, consecutive: int = 0):
    self.limit, self.consecutive = limit, consecutive
    self._pending: list[tuple[int, jax.Array]] = []

  def add(self, step: int, is_finite: jax.Array) -> None:
    self._pending.append((step, is_finite))

  def resolve(self, lag: int = 0) -> int | None:
    count = len(self._pending) - lag
    if count <= 0:
      return None
    todo, self._pending = self._pending[:count], self._pending[count:]
    for (step, _), finite in zip(todo, jax.device_get([flag for _, flag in todo]), strict=True):
      self.consecutive = 0 if finite else self.consecutive + 1
      if self.limit and self.consecutive >= self.limit:
        self._pending = []
        return step
    return None


def _streak_error(streak: _SkipStreak, step: int, checkpointer: Checkpointer) -> NonFiniteLossError:
  first, good = step - streak.consecutive + 1, checkpointer.newest_good_step()
  where = f"there is no good checkpoint in {checkpointer.directory}"
  if good is not None:
    where = f"the last good checkpoint is {checkpointer.directory}/{good}"
    during = [s for s in checkpointer.all_steps() if s > good]
    if during:
      where += f" (move {during}, written during the streak, aside to resume from it)"
  return NonFiniteLossError(
    f"{streak.consecutive} steps in a row had a non-finite loss or gradient (steps {first}-{step}):"
    f" stopped at step {step} because config.train.max_consecutive_skips={streak.limit} (0 = never"
    f" stop). Their updates were dropped and this state was not saved; {where}. Lower"
    f" optimizer.learning_rate or check the data near step {first} before resuming."
  )


def _stop_error(step: int, metrics: dict[str, Any], rc: RunConfig, directory: pathlib.Path):
  values = jax.device_get({k: metrics[k] for k in ("loss", "grad_norm", "learning_rate")})
  return NonFiniteLossError(
    f"non-finite loss or gradient at step {step} (loss={float(values['loss'])}, grad_norm="
    f"{float(values['grad_norm'])}, learning_rate={float(values['learning_rate']):.3g}): stopped"
    " because config.train.non_finite='stop'. The update was not applied; checkpoint"
    f" {directory}/{step} holds the parameters from before it, and resuming continues after the"
    " bad batch. To drop such updates and go on, set config.train.non_finite='skip' (the run then"
    f" stops after config.train.max_consecutive_skips={rc.train.max_consecutive_skips} in a row);"
    " if it recurs, lower optimizer.learning_rate or check the data near this step."
  )


def _load_init_from(rc: RunConfig, mesh: jax.sharding.Mesh) -> Any:
  """The `init_from` checkpoint as global arrays with the state's parameter shardings: each
  process reads only the slices its own devices hold (flanjax/model/hf_sharded.py)."""
  from flanjax.model import hf_sharded

  theirs = model_shape(
    hf_sharded.checkpoint_config(rc.init_from).replace(scan_layers=rc.model.scan_layers)
  )
  ours = model_shape(rc.model)
  if theirs != ours:
    diff = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
    raise ValueError(
      f"config.init_from={rc.init_from!r} has a different model shape "
      f"than config.model ({{field: (checkpoint, config)}} = {diff})"
    )
  _, shardings = abstract_run_state(rc, mesh)
  return hf_sharded.load_sharded_params(rc.init_from, rc.model, shardings.params)


def _local_batch(batch: dict[str, np.ndarray], rows: int, step: int) -> dict[str, np.ndarray]:
  missing = [key for key in BATCH_KEYS if key not in batch]
  if missing:
    raise KeyError(f"batch for step {step} lacks {missing} (EncDecFeatureConverter keys)")
  picked = {key: np.asarray(batch[key]) for key in BATCH_KEYS + PACKING_KEYS if key in batch}
  for key, value in picked.items():
    if value.shape[0] != rows:
      raise ValueError(
        f"batch[{key!r}] has {value.shape[0]} rows in this process; expected "
        f"config.train.batch_size / process_count = {rows}"
      )
  return picked


def train(
  run_config: RunConfig,
  workdir: str | pathlib.Path,
  batch_iter: Iterator[dict[str, np.ndarray]],
  *,
  eval_fn: Callable[[int, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Trains `run_config` in `workdir` on `batch_iter`; see the module docstring."""
  rc = run_config
  tc = rc.train
  rc.validate(jax.device_count(), jax.process_count())
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = partitioning.make_mesh(rc.mesh)
  optimizer = make_optimizer(rc.optimizer, tc.steps)
  init_fn = lambda rng: t5.init_params(rc.model, rng)
  logical_specs = t5.param_logical_axes(rc.model)

  checkpointer = Checkpointer(
    workdir / "checkpoints", keep=tc.keep_checkpoints, async_save=tc.async_checkpoints
  )
  try:
    restored = restore_latest(checkpointer, rc, mesh, data_iter=batch_iter)
  except BaseException:
    checkpointer.close()
    raise
  latest = restored.step if restored else None
  if restored:
    state = restored.state
    _say(f"resumed from step {latest} ({checkpointer.directory}/{latest})")
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
  else:
    initial_params = _load_init_from(rc, mesh) if rc.init_from else None
    state, state_shardings = create_train_state(
      init_fn=init_fn,
      logical_specs=logical_specs,
      optimizer=optimizer,
      mesh=mesh,
      seed=rc.seed,
      initial_params=initial_params,
    )
  train_step = jit_run_train_step(rc, state_shardings, mesh)

  writer = MetricsWriter(workdir, resume_step=latest)
  peak, peak_source = (
    (tc.peak_flops_per_device, "config")
    if tc.peak_flops_per_device
    else flops.peak_flops_per_device()
  )
  # Forced CPU "devices" share the host's cores: the measured peak is per process there.
  chips = jax.process_count() if jax.devices()[0].platform == "cpu" else jax.device_count()
  total_peak = peak * chips
  logging.info(
    "training %s steps on mesh %s; peak %.3g FLOP/s per chip (%s)",
    tc.steps,
    dict(mesh.shape),
    peak,
    peak_source,
  )

  # Skipped steps in a row so far (carried over from the checkpoint, so a resumed streak counts).
  streak = _SkipStreak(
    tc.max_consecutive_skips, restored.extra.get("consecutive_skips", 0) if restored else 0
  )

  def extra_for_checkpoint(step: int, state: TrainState) -> dict[str, Any]:
    local = batch_iter.get_state() if hasattr(batch_iter, "get_state") else None
    states = distributed.gather_json(local)
    # A global stream's state is the same everywhere: stored once, any process count resumes.
    same = all(other == states[0] for other in states)
    return {
      "step": step,
      "config": rc.to_dict(),
      "model_shape": model_shape(rc.model),
      **({"data_state": states[0]} if same else {"data_states": states}),
      "process_count": jax.process_count(),
      "non_finite_skips": int(jax.device_get(state.non_finite_skips)),
      "consecutive_skips": streak.consecutive,
    }

  saved_steps = set(checkpointer.all_steps())

  def save(step: int, state: TrainState, *, check_streak: bool = True) -> None:
    if check_streak and streak.resolve() is not None:  # never save the state that ends a streak
      raise _streak_error(streak, step, checkpointer)
    if step not in saved_steps:
      checkpointer.save(step, state, extra=extra_for_checkpoint(step, state))
      saved_steps.add(step)

  rows = tc.batch_size // jax.process_count()
  step = int(jax.device_get(state.step))
  start_step = step
  pending: list[dict[str, jax.Array]] = []
  last_logged: dict[str, Any] = {}
  flops_per_step = None
  interval_start = time.perf_counter()
  run_start = interval_start
  result = {"preempted": False, "signal": None, "data_exhausted": False}
  with PreemptionFlag() as preemption:
    try:
      while step < tc.steps:
        batch, status, fetch_error = _fetch(batch_iter, rows, step)
        if jax.process_count() == 1 and fetch_error is not None:
          raise fetch_error
        # One collective per step, before the step's own: nobody waits for a process that stops.
        signal_name, statuses = _agree(preemption.signal_name, status)
        if statuses.any():
          error = _data_stream_error(statuses, fetch_error, step, tc.steps, sorted(saved_steps))
          if error is not None:
            raise error from fetch_error
          logging.warning("the batch iterator ended at step %d of %d", step, tc.steps)
          result["data_exhausted"] = True
          break
        if flops_per_step is None:
          input_length = batch["encoder_input_tokens"].shape[1]
          target_length = batch["decoder_target_tokens"].shape[1]
          flops_per_step = tc.batch_size * flops.train_flops_per_sequence(
            rc.model, input_length, target_length
          )
        if step == start_step:
          _say(f"compiling the train step (first step {step + 1} of {tc.steps})")
        state, metrics = train_step(state, partitioning.make_global_batch(batch, mesh))
        step += 1
        pending.append(metrics)
        streak.add(step, metrics["is_finite"])
        if tc.non_finite == "stop" and not bool(jax.device_get(metrics["is_finite"])):
          streak.resolve()
          save(step, state, check_streak=False)
          checkpointer.wait()
          raise _stop_error(step, metrics, rc, checkpointer.directory)
        stopped_at = streak.resolve(lag=1)
        if stopped_at is not None:
          raise _streak_error(streak, stopped_at, checkpointer)
        if step % tc.log_every == 0 or step == tc.steps:
          fetched = jax.device_get(pending)
          pending = []
          elapsed = time.perf_counter() - interval_start
          tokens = sum(float(m["input_tokens"]) + float(m["target_tokens"]) for m in fetched)
          scalars = {name: float(np.mean([m[name] for m in fetched])) for name in _AVERAGED}
          scalars.update(
            learning_rate=float(fetched[-1]["learning_rate"]),
            non_finite_skips=int(fetched[-1]["non_finite_skips"]),
            tokens_per_second=tokens / elapsed,
            steps_per_second=len(fetched) / elapsed,
            mfu=flops_per_step * len(fetched) / elapsed / total_peak,
          )
          writer.write(step, scalars)
          last_logged = scalars
          _progress(step, tc.steps, scalars, start_step, run_start)
          interval_start = time.perf_counter()
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
          save(step, state)  # before evaluating: a failing eval never costs the checkpoint
        if eval_fn is not None and tc.eval_every and step % tc.eval_every == 0:
          eval_scalars = {
            f"eval/{name}": float(value)
            for name, value in (eval_fn(step, state.params) or {}).items()
            if isinstance(value, int | float | np.number)
          }
          if eval_scalars:
            writer.write(step, eval_scalars)
          interval_start = time.perf_counter()
        if signal_name:  # agreed before this step, which every process has now finished
          logging.warning("%s: saving step %d and exiting", signal_name, step)
          result.update(preempted=True, signal=signal_name)
          break
      save(step, state)
      checkpointer.wait()
    except BaseException as error:
      writer.close()
      _close_after_error(checkpointer)
      # Other processes may be waiting for this one in a collective: never sit in jax's exit
      # barrier with them (they fail as soon as this process is gone, and end the same way).
      distributed.exit_without_barrier_at_exit(130 if isinstance(error, KeyboardInterrupt) else 1)
      raise
  writer.close()
  checkpointer.close()
  return {"step": step, **result, **last_logged}


def _close_after_error(checkpointer: Checkpointer) -> None:
  """Closes `checkpointer` while another error propagates: its own failure is only logged."""
  try:
    checkpointer.close()
  except Exception as error:  # noqa: BLE001 — the error being raised matters more
    logging.error("closing the checkpointer failed too: %s", error)


def _say(message: str) -> None:
  """A line for the person watching (process 0 only): what happens before the first log."""
  logging.info(message)
  if jax.process_index() == 0:
    print(message, flush=True)


def _progress(
  step: int, total: int, scalars: dict[str, float], start_step: int, run_start: float
) -> None:
  if jax.process_index() != 0:
    return
  done = step - start_step
  seconds_left = (time.perf_counter() - run_start) / max(done, 1) * (total - step)
  print(
    f"step {step}/{total} | loss {scalars['loss']:.4f} | lr {scalars['learning_rate']:.2e} | "
    f"{scalars['tokens_per_second']:,.0f} tokens/s | mfu {scalars['mfu']:.3f} | "
    f"skips {scalars['non_finite_skips']} | "
    f"eta {time.strftime('%H:%M:%S', time.gmtime(seconds_left))}",
    flush=True,
  )
