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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flanjax import partitioning


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
    initial_params: host (numpy) parameters to start from instead of `init_fn` (`init_from`);
      they are placed shard by shard, then the optimizer state is built on device.
  """
  abstract_state, shardings = abstract_train_state(
    init_fn=init_fn, logical_specs=logical_specs, optimizer=optimizer, mesh=mesh
  )
  if initial_params is None:
    init = jax.jit(lambda rng: _state_from_params(init_fn(rng), optimizer), out_shardings=shardings)
    with jax.set_mesh(mesh):
      return init(jax.random.key(seed)), shardings
  _check_same_tree(abstract_state.params, initial_params)
  placed = jax.tree.map(
    lambda value, sharding, abstract: partitioning.host_array_to_sharded(
      value.astype(abstract.dtype), sharding
    ),
    initial_params,
    shardings.params,
    abstract_state.params,
  )
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
