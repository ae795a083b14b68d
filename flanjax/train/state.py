"""Train state and its sharded construction (eval_shape -> shardings -> jit(init, out_shardings)).

The state is never materialised on one device: `jax.eval_shape` gives the shapes, the logical
axis names of the parameters give the shardings, and the initialiser is compiled with those
`out_shardings`, so each device only ever allocates its own shards.

Example:
  >>> mesh = partitioning.make_mesh(partitioning.MeshConfig())
  >>> state, shardings = create_train_state(
  ...     init_fn=lambda rng: t5.init_params(cfg, rng), logical_specs=t5.param_logical_axes(cfg),
  ...     optimizer=make_optimizer(OptimizerConfig(), 100), mesh=mesh, seed=0)
  >>> int(state.step), int(state.non_finite_skips)
  (0, 0)
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flanjax import partitioning
from flanjax.config import RunConfig
from flanjax.model import t5
from flanjax.model.config import T5Config
from flanjax.train.checkpoint import Checkpointer, CorruptCheckpointError
from flanjax.train.optim import make_optimizer

# Fields of T5Config that decide parameter shapes: a checkpoint must agree on all of them.
SHAPE_FIELDS = (
  "vocab_size",
  "d_model",
  "d_kv",
  "d_ff",
  "num_layers",
  "num_decoder_layers",
  "num_heads",
  "relative_attention_num_buckets",
  "feed_forward_proj",
  "tie_word_embeddings",
  "scan_layers",  # stacked vs per-layer parameter trees
)
# Fields older checkpoints did not record, with the value they had.
_SHAPE_DEFAULTS = {"scan_layers": False}


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model shape or data pipeline (or per-process
  data states of another process count)."""


def model_shape(model: T5Config) -> dict[str, Any]:
  return {name: getattr(model, name) for name in SHAPE_FIELDS}


@struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position.

  Attributes:
    step: int32 number of batches consumed (also the dropout RNG's fold-in index).
    params: float32 parameter tree (compute may be bf16; master weights stay f32).
    opt_state: optax state, sharded like the parameters it tracks.
    non_finite_skips: int32 number of steps whose update was dropped for a non-finite loss or
      gradient (the optimizer's own count excludes them).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  non_finite_skips: jax.Array


def state_shardings(abstract_state: TrainState, logical_specs: Any, mesh: Mesh) -> TrainState:
  """A TrainState of NamedShardings: params from their logical axes, optimizer state derived."""
  params_shardings = partitioning.param_shardings(logical_specs, abstract_state.params, mesh)
  opt_shardings = partitioning.derived_state_shardings(
    abstract_state.opt_state, abstract_state.params, params_shardings, mesh
  )
  replicated = NamedSharding(mesh, PartitionSpec())
  return TrainState(
    step=replicated, params=params_shardings, opt_state=opt_shardings, non_finite_skips=replicated
  )


def _state_from_params(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    non_finite_skips=jnp.zeros((), jnp.int32),
  )


def abstract_train_state(
  *,
  init_fn: Callable[[jax.Array], Any],
  logical_specs: Any,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
) -> tuple[TrainState, TrainState]:
  """(TrainState of ShapeDtypeStructs, TrainState of NamedShardings), allocating nothing."""
  abstract_state = jax.eval_shape(
    lambda rng: _state_from_params(init_fn(rng), optimizer), jax.random.key(0)
  )
  return abstract_state, state_shardings(abstract_state, logical_specs, mesh)


def create_train_state(
  *,
  init_fn: Callable[[jax.Array], Any],
  logical_specs: Any,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  seed: int,
  initial_params: Any | None = None,
) -> tuple[TrainState, TrainState]:
  """Builds the sharded initial state; returns (state, its shardings).

  Args:
    init_fn: rng -> parameter tree (float32).
    logical_specs: logical PartitionSpec per parameter (same tree as the parameters).
    optimizer: the optax transformation whose state is created alongside.
    mesh: the device mesh.
    seed: parameter-initialisation seed.
    initial_params: parameters to start from instead of `init_fn` (`init_from`): global jax
      arrays already sharded (hf_sharded), or host numpy arrays placed shard by shard; the
      optimizer state is then built on device.
  """
  abstract_state, shardings = abstract_train_state(
    init_fn=init_fn, logical_specs=logical_specs, optimizer=optimizer, mesh=mesh
  )
  if initial_params is None:
    init = jax.jit(lambda rng: _state_from_params(init_fn(rng), optimizer), out_shardings=shardings)
    with jax.set_mesh(mesh):
      return init(jax.random.key(seed)), shardings
  _check_same_tree(abstract_state.params, initial_params)
  # Global arrays (hf_sharded.load_sharded_params) move on device; host ones shard by shard.
  placed = partitioning.place(initial_params, shardings.params, abstract_state.params)
  init = jax.jit(
    lambda params: _state_from_params(params, optimizer),
    in_shardings=(shardings.params,),
    out_shardings=shardings,
  )
  with jax.set_mesh(mesh):
    return init(placed), shardings


def _check_same_tree(expected: Any, given: Any) -> None:
  expected_leaves = {
    jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]
  }
  given_leaves = {
    jax.tree_util.keystr(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_flatten_with_path(given)[0]
  }
  if expected_leaves != given_leaves:
    missing = sorted(set(expected_leaves) - set(given_leaves))[:5]
    extra = sorted(set(given_leaves) - set(expected_leaves))[:5]
    wrong = sorted(
      k for k in set(expected_leaves) & set(given_leaves) if expected_leaves[k] != given_leaves[k]
    )[:5]
    raise ValueError(
      "init_from: the loaded parameters do not match config.model "
      f"(missing {missing}, unexpected {extra}, wrong shape {wrong})"
    )


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying shardings: the restore target for Orbax."""
  return jax.tree.map(
    lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
    abstract,
    shardings,
  )


def abstract_run_state(rc: RunConfig, mesh: Mesh) -> tuple[TrainState, TrainState]:
  """(abstract TrainState, its shardings) of a run: the restore target, allocating nothing."""
  return abstract_train_state(
    init_fn=lambda rng: t5.init_params(rc.model, rng),
    logical_specs=t5.param_logical_axes(rc.model),
    optimizer=make_optimizer(rc.optimizer, rc.train.steps),
    mesh=mesh,
  )


@dataclasses.dataclass(frozen=True)
class Restored:
  """A verified checkpoint: its state, step and JSON metadata (`extra`)."""

  state: TrainState
  step: int
  extra: dict[str, Any]


def _restore(
  checkpointer: Checkpointer, step: int, rc: RunConfig, mesh: Mesh, data_iter: Any
) -> Restored:
  extra = checkpointer.read_extra(step)
  saved_shape, wanted = extra.get("model_shape", {}), model_shape(rc.model)
  saved_shape = {**_SHAPE_DEFAULTS, **saved_shape} if saved_shape else saved_shape
  if saved_shape != wanted:
    diff = {k: (saved_shape.get(k), wanted[k]) for k in wanted if saved_shape.get(k) != wanted[k]}
    raise CheckpointMismatchError(
      f"{checkpointer.directory} holds a checkpoint (step {step}) of a different model shape "
      f"than config.model: {{field: (checkpoint, config)}} = {diff}. Use a new workdir or set "
      "config.model to the checkpoint's shape."
    )
  wants_data = data_iter is not None and hasattr(data_iter, "set_state")
  data_state = _data_state_for_this_process(extra, step) if wants_data else None
  abstract, shardings = abstract_run_state(rc, mesh)
  with jax.set_mesh(mesh):
    state = checkpointer.restore_state(
      step, abstract_with_shardings(abstract, shardings), extra=extra
    )
  if data_state is not None:
    try:
      data_iter.set_state(data_state)  # only once the arrays verified
    except ValueError as error:
      raise CheckpointMismatchError(f"checkpoint step {step}: {error}") from None
  return Restored(state, step, extra)


def _data_state_for_this_process(extra: dict[str, Any], step: int) -> Any:
  """This process's data state in a checkpoint's `extra`, for any process count when global.

  `data_state`: one global state (every process wrote the same), whatever the process count.
  `data_states`: one per process (older checkpoints, or a per-process stream); equal entries
  are a global state too, else the count must match.
  Example: {"data_states": [{"position": 3}, {"position": 3}]} -> {"position": 3} on 1 process.
  """
  if "data_state" in extra:
    return extra["data_state"]
  states = extra.get("data_states") or []
  if states and all(other == states[0] for other in states):
    return states[0]
  if len(states) != jax.process_count():
    raise CheckpointMismatchError(
      f"checkpoint step {step} holds per-process data states of {len(states)} process(es), "
      f"not one global state; resume it with {len(states)} processes (now "
      f"{jax.process_count()}), or give the loop a global stream (flanjax's pipeline is one)"
    )
  return states[jax.process_index()]


def restore_state(
  checkpointer: Checkpointer, step: int, rc: RunConfig, mesh: Mesh, *, data_iter: Any = None
) -> TrainState:
  """The verified, sharded TrainState of checkpoint `step`, checked against `rc.model`'s shape.

  With `data_iter` (anything with `set_state`), its position is restored too, so the resumed
  stream continues exactly where the checkpointed one stopped. Raises CorruptCheckpointError
  (naming the file or array) for a checkpoint that cannot be read or does not verify, and
  CheckpointMismatchError for one of another model shape or data pipeline (a global data state,
  as flanjax's pipeline writes, resumes with any process count; per-process ones need the same).
  """
  return _restore(checkpointer, step, rc, mesh, data_iter).state


def restore_latest(
  checkpointer: Checkpointer, rc: RunConfig, mesh: Mesh, *, data_iter: Any = None
) -> Restored | None:
  """The newest checkpoint that verifies (None for a directory without checkpoints).

  Each newer one that is corrupt is moved aside (`<step>.corrupt-<time>`, loudly) and the next
  older one tried. Raises CorruptCheckpointError when checkpoints existed but none verifies.

  Example: steps [5, 10] with a flipped byte in 10 -> 10 becomes `10.corrupt-...`, returns
  Restored(step=5, ...).
  """
  moved = []
  for step in reversed(checkpointer.all_steps()):
    try:
      restored = _restore(checkpointer, step, rc, mesh, data_iter)
    except CorruptCheckpointError as error:
      moved.append(checkpointer.quarantine(step, error))
      continue
    if moved:
      logging.warning(
        "fell back to checkpoint %s/%d, the newest that verifies (moved aside: %s)",
        checkpointer.directory,
        step,
        ", ".join(path.name for path in moved),
      )
    return restored
  if moved:
    raise CorruptCheckpointError(
      f"no checkpoint in {checkpointer.directory} verifies; all were moved aside "
      f"({', '.join(path.name for path in moved)}). Rerun to start from step 0, or put back a "
      "good copy of one of them",
      step=-1,
      path=checkpointer.directory,
    )
  return None


def _host_params(params: Any) -> Any:
  """Full numpy parameters on every process (sharded over several processes: all-gathered)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    params = multihost_utils.process_allgather(params, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(params))


def restore_params(
  workdir: str | pathlib.Path, step: int | None, rc: RunConfig, *, on_host: bool = True
) -> tuple[Any, int]:
  """(parameters, step) of `workdir/checkpoints` (the newest good one for None): full numpy
  arrays on every process, or with `on_host=False` global arrays left sharded as training placed
  them on `rc.mesh` (eval and predict: no process holds them whole).

  The one restore path for eval, export and predict. A missing step lists the existing ones.
  A corrupt checkpoint is moved aside; asked for by number, it raises CorruptCheckpointError
  (a ValueError, one line naming the file); as "latest", the next older one is used, with a
  warning. Raises FileNotFoundError / ValueError naming the directory or step to fix.
  """
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise FileNotFoundError(f"{directory} does not exist: train first, or pass --hf_model DIR")
  checkpointer = Checkpointer(directory, keep=max(rc.train.keep_checkpoints, 1), async_save=False)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise FileNotFoundError(f"{directory} holds no finished checkpoint")
    if step is not None and step not in steps:
      raise ValueError(f"--checkpoint {step} does not exist in {directory}; steps: {steps}")
    rc.validate(jax.device_count(), jax.process_count())
    mesh = partitioning.make_mesh(rc.mesh)
    if step is None:
      restored = restore_latest(checkpointer, rc, mesh)
      state, step = restored.state, restored.step
    else:
      try:
        state = restore_state(checkpointer, step, rc, mesh)
      except CorruptCheckpointError as error:
        moved = checkpointer.quarantine(step, error)
        others = checkpointer.all_steps()
        raise CorruptCheckpointError(
          f"{error}; moved aside to {moved.name}. Pick another --checkpoint (steps: {others})",
          step=step,
          path=error.path,
        ) from None
    params = _host_params(state.params) if on_host else state.params
  finally:
    checkpointer.close()
  return params, step
