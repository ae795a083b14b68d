"""The training loop: sharded state, jitted step, logging, Orbax checkpoints, preemption, resume.

Entry point for `tools/launch.py`:

    final_metrics = train(config, workdir, batch_iter, eval_fn=None)

* `config`: the ml_collections ConfigDict (read once, by `TrainConfig.from_config`).
* `batch_iter`: this process's stream of numpy batches (EncDecFeatureConverter keys, rows =
  train.batch_size / process_count) with `get_state()` / `set_state(dict)`; its state goes into
  every checkpoint, so a resumed run sees exactly the batches an uninterrupted one would.
* `eval_fn(step, params) -> dict`: called on every process every `train.eval_every` steps; the
  numbers it returns are logged as `eval/<name>`.

Workdir: `checkpoints/` (Orbax; resumed from automatically), `metrics.jsonl`, `tensorboard/`.
Every `train.log_every` steps process 0 writes one record: step, loss / cross_entropy / z_loss /
grad_norm (means over the interval), learning_rate (at the last step), non_finite_skips,
tokens_per_second (non-padding input + target tokens of the global batch per second of wall
time), steps_per_second and mfu (flanjax/train/flops.py FLOPs over the peak: the datasheet for
known accelerators, else a measured f32 matmul, or `train.peak_flops_per_device`), and prints a
progress line with the ETA. On resume, records past the restored step are dropped (they are
recomputed identically).
SIGTERM (preemption): the current step finishes, a checkpoint is written and `train` returns with
`preempted=True` (the launcher then exits 0); running again resumes from it.

Example:
  >>> data = SyntheticTask(batch_size=8, input_length=32, target_length=16, vocab_size=512)
  >>> train(config, "/tmp/run", data)["step"]
  100
"""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from flanjax import partitioning
from flanjax.model import t5
from flanjax.train import distributed, flops
from flanjax.train.checkpoint import Checkpointer
from flanjax.train.config import TrainConfig, model_shape
from flanjax.train.optim import make_optimizer, make_schedule
from flanjax.train.state import (
  TrainState,
  abstract_train_state,
  abstract_with_shardings,
  create_train_state,
)
from flanjax.train.step import jit_train_step, make_train_step

BATCH_KEYS = (
  "encoder_input_tokens",
  "decoder_input_tokens",
  "decoder_target_tokens",
  "decoder_loss_weights",
)
PACKING_KEYS = (
  "encoder_segment_ids",
  "decoder_segment_ids",
  "encoder_positions",
  "decoder_positions",
)
_AVERAGED = ("loss", "cross_entropy", "z_loss", "grad_norm")


class NonFiniteLossError(FloatingPointError):
  """Raised under `train.non_finite="stop"` after the last good state has been saved."""


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model shape."""


class MetricsWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: pathlib.Path, *, resume_step: int | None):
    self.enabled = jax.process_index() == 0
    self.path = workdir / "metrics.jsonl"
    self._tensorboard = None
    if not self.enabled:
      return
    if resume_step is not None and self.path.exists():
      # Steps after the restored checkpoint will be recomputed: drop their stale lines.
      kept = [
        line
        for line in self.path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= resume_step
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


class PreemptionFlag:
  """Set by SIGTERM; the loop checks it between steps (agreeing across processes)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: finishing the current step, then checkpointing")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def agreed(self) -> bool:
    return distributed.any_process(self.requested)


def _config_json(config: Any) -> Any:
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def train(
  config: Any,
  workdir: str | pathlib.Path,
  batch_iter: Iterator[dict[str, np.ndarray]],
  eval_fn: Callable[[int, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Trains from `config` (an ml_collections ConfigDict); see the module docstring."""
  return run(
    TrainConfig.from_config(config),
    workdir,
    batch_iter,
    eval_fn=eval_fn,
    config_json=_config_json(config),
  )


def _make_apply_fn(train_config: TrainConfig):
  model = t5.T5(train_config.model)
  enable_dropout = train_config.model.dropout_rate > 0

  def apply_fn(params, batch, dropout_rng):
    packing = {name: batch[name] for name in PACKING_KEYS if name in batch}
    with nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
      return model.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        **packing,
        enable_dropout=enable_dropout,
        rngs={"dropout": dropout_rng},
      )

  return apply_fn


def _load_init_from(train_config: TrainConfig) -> Any:
  from flanjax.model import hf

  loaded = hf.load_pretrained(train_config.init_from, dtype=train_config.model.param_dtype)
  if model_shape(loaded.config) != model_shape(train_config.model):
    theirs, ours = model_shape(loaded.config), model_shape(train_config.model)
    diff = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
    raise ValueError(
      f"config.init_from={train_config.init_from!r} has a different model shape "
      f"than config.model ({{field: (checkpoint, config)}} = {diff})"
    )
  return jax.tree.map(np.asarray, jax.device_get(loaded.params))


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


def run(
  train_config: TrainConfig,
  workdir: str | pathlib.Path,
  batch_iter: Iterator[dict[str, np.ndarray]],
  *,
  eval_fn: Callable[[int, Any], dict[str, Any]] | None = None,
  config_json: Any = None,
) -> dict[str, Any]:
  """Trains from a `TrainConfig` (the dataclass path of `train`)."""
  tc = train_config
  tc.validate(jax.device_count(), jax.process_count())
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = partitioning.make_mesh(tc.mesh)
  optimizer = make_optimizer(tc.optimizer, tc.steps)
  schedule = make_schedule(tc.optimizer, tc.steps)
  init_fn = lambda rng: t5.init_params(tc.model, rng)
  logical_specs = t5.param_logical_axes(tc.model)

  checkpointer = Checkpointer(
    workdir / "checkpoints", keep=tc.keep_checkpoints, async_save=tc.async_checkpoints
  )
  latest = checkpointer.latest_step()
  if latest is not None:
    state = _restore(checkpointer, latest, tc, batch_iter, init_fn, logical_specs, optimizer, mesh)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
  else:
    initial_params = _load_init_from(tc) if tc.init_from else None
    state, state_shardings = create_train_state(
      init_fn=init_fn,
      logical_specs=logical_specs,
      optimizer=optimizer,
      mesh=mesh,
      seed=tc.seed,
      initial_params=initial_params,
    )
  train_step = jit_train_step(
    make_train_step(
      _make_apply_fn(tc),
      optimizer,
      schedule,
      dropout_seed=tc.seed + 1,
      num_microbatches=tc.num_microbatches,
      label_smoothing=tc.label_smoothing,
      z_loss=tc.z_loss,
    ),
    state_shardings,
    mesh,
  )

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

  def extra_for_checkpoint(step: int) -> dict[str, Any]:
    local = batch_iter.get_state() if hasattr(batch_iter, "get_state") else None
    return {
      "step": step,
      "config": config_json,
      "train_config": tc.to_json_dict(),
      "model_shape": model_shape(tc.model),
      "data_states": distributed.gather_json(local),
      "process_count": jax.process_count(),
    }

  saved_steps = set(checkpointer.all_steps())

  def save(step: int, state: TrainState) -> None:
    if step not in saved_steps:
      checkpointer.save(step, state, extra=extra_for_checkpoint(step))
      saved_steps.add(step)

  rows = tc.batch_size // jax.process_count()
  step = int(jax.device_get(state.step))
  start_step = step
  pending: list[dict[str, jax.Array]] = []
  last_logged: dict[str, Any] = {}
  flops_per_step = None
  interval_start = time.perf_counter()
  run_start = interval_start
  result = {"preempted": False, "data_exhausted": False}
  with PreemptionFlag() as preemption:
    try:
      while step < tc.steps:
        try:
          batch = _local_batch(next(batch_iter), rows, step)
        except StopIteration:
          logging.warning("the batch iterator ended at step %d of %d", step, tc.steps)
          result["data_exhausted"] = True
          break
        if flops_per_step is None:
          input_length = batch["encoder_input_tokens"].shape[1]
          target_length = batch["decoder_target_tokens"].shape[1]
          flops_per_step = tc.batch_size * flops.train_flops_per_sequence(
            tc.model, input_length, target_length
          )
        state, metrics = train_step(state, partitioning.make_global_batch(batch, mesh))
        step += 1
        pending.append(metrics)
        if tc.non_finite == "stop" and not bool(jax.device_get(metrics["is_finite"])):
          save(step, state)
          checkpointer.wait()
          raise NonFiniteLossError(
            f"non-finite loss or gradient at step {step} (loss="
            f"{float(jax.device_get(metrics['loss']))}); stopping because "
            f"config.train.non_finite='stop'. The update was not applied: the last good "
            f"parameters are saved in {checkpointer.directory}/{step}. Set "
            "config.train.non_finite='skip' to drop such updates and continue."
          )
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
        if eval_fn is not None and tc.eval_every and step % tc.eval_every == 0:
          eval_scalars = {
            f"eval/{name}": float(value)
            for name, value in (eval_fn(step, state.params) or {}).items()
            if isinstance(value, int | float | np.number)
          }
          if eval_scalars:
            writer.write(step, eval_scalars)
          interval_start = time.perf_counter()
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
          save(step, state)
        if preemption.agreed():  # a collective when multi-process: every process must ask
          logging.warning("preempted at step %d: saving and exiting", step)
          result["preempted"] = True
          break
      save(step, state)
      checkpointer.wait()
    finally:
      checkpointer.close()
      writer.close()
  return {"step": step, **result, **last_logged}


def _restore(
  checkpointer: Checkpointer,
  step: int,
  tc: TrainConfig,
  batch_iter: Any,
  init_fn: Callable,
  logical_specs: Any,
  optimizer: Any,
  mesh: Any,
) -> TrainState:
  extra = checkpointer.read_extra(step)
  saved_shape, wanted = extra.get("model_shape", {}), model_shape(tc.model)
  if saved_shape != wanted:
    diff = {k: (saved_shape.get(k), wanted[k]) for k in wanted if saved_shape.get(k) != wanted[k]}
    raise CheckpointMismatchError(
      f"{checkpointer.directory} holds a checkpoint (step {step}) of a different model shape "
      f"than config.model: {{field: (checkpoint, config)}} = {diff}. Use a new workdir or set "
      "config.model to the checkpoint's shape."
    )
  data_states = extra.get("data_states") or []
  if hasattr(batch_iter, "set_state"):
    if len(data_states) != jax.process_count():
      raise CheckpointMismatchError(
        f"checkpoint step {step} was written by {len(data_states)} process(es); resume it with "
        f"the same number of processes (now {jax.process_count()})"
      )
    if data_states[jax.process_index()] is not None:
      batch_iter.set_state(data_states[jax.process_index()])
  abstract, shardings = abstract_train_state(
    init_fn=init_fn, logical_specs=logical_specs, optimizer=optimizer, mesh=mesh
  )
  with jax.set_mesh(mesh):
    state = checkpointer.restore_state(step, abstract_with_shardings(abstract, shardings))
  logging.info("resumed from %s/%d", checkpointer.directory, step)
  return state


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
