"""Device mesh and the one table that maps logical axis names to mesh axes.

The mesh has three axes, always in this order:
  * `data`:  pure data parallelism (parameters replicated along it),
  * `fsdp`:  data parallelism whose parameters and optimizer state are sharded along it (ZeRO-3),
  * `model`: tensor parallelism (heads, mlp and vocab dimensions split along it).
The batch is split over `data` x `fsdp`. Only this module knows mesh axis names; the model speaks
logical names (batch, length, embed, mlp, heads, kv, vocab, relpos_buckets, layers).

Example:
  >>> cfg = MeshConfig(data=2, fsdp=-1, model=2)
  >>> cfg.resolve(num_devices=8)
  (2, 2, 2)
  >>> logical_to_mesh_spec(PartitionSpec("vocab", "embed"))
  PartitionSpec('model', 'fsdp')
  >>> logical_to_mesh_spec(PartitionSpec("batch", "length", "embed"))  # fsdp taken by batch
  PartitionSpec(('data', 'fsdp'), None, None)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
BATCH_MESH_AXES = ("data", "fsdp")

# Logical -> mesh rules, first match wins (flax semantics: a rule is skipped when its mesh axis is
# already used by another dimension of the same array, so later rules act as fallbacks).
# Parameters: `embed` is split over fsdp (every kernel has an embed dimension, so every kernel is
# FSDP-sharded) and heads/mlp/vocab over model (Megatron-style tensor parallelism).
# Activations: `batch` takes data x fsdp, so their `embed` falls back to unsharded.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", BATCH_MESH_AXES),
  ("vocab", "model"),
  ("heads", "model"),
  ("mlp", "model"),
  ("embed", "fsdp"),
  ("embed", None),
  ("length", None),
  ("kv", None),
  ("relpos_buckets", None),
  ("layers", None),  # the stacked axis of scanned layers (model.scan_layers): replicated
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape; at most one axis may be -1 ("whatever is left")."""

  data: int = 1
  fsdp: int = -1
  model: int = 1

  def resolve(self, num_devices: int) -> tuple[int, int, int]:
    """The concrete (data, fsdp, model) shape for `num_devices`, or a ValueError naming the key."""
    sizes = {"data": self.data, "fsdp": self.fsdp, "model": self.model}
    for name, size in sizes.items():
      if size == 0 or size < -1:
        raise ValueError(f"mesh.{name}={size}: expected a positive size or -1 (fill)")
    fill = [name for name, size in sizes.items() if size == -1]
    if len(fill) > 1:
      raise ValueError(f"mesh.{fill[0]} and mesh.{fill[1]} are both -1: at most one axis may fill")
    known = math.prod(size for size in sizes.values() if size != -1)
    if fill:
      if num_devices % known:
        raise ValueError(
          f"mesh: the fixed axes ({self._describe()}) multiply to {known}, which does not divide "
          f"{num_devices} devices"
        )
      sizes[fill[0]] = num_devices // known
    elif known != num_devices:
      raise ValueError(
        f"mesh: {self._describe()} needs {known} devices but {num_devices} are available; "
        "set one of mesh.data / mesh.fsdp / mesh.model to -1 or fix the sizes"
      )
    return sizes["data"], sizes["fsdp"], sizes["model"]

  def _describe(self) -> str:
    return f"mesh.data={self.data}, mesh.fsdp={self.fsdp}, mesh.model={self.model}"


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, model) mesh over `devices` (default: every device of every process).

  Devices keep `jax.devices()` order (grouped by process), so each process's devices form a
  contiguous block of the batch axes and its local batch rows stay on its own devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = config.resolve(len(devices))
  device_grid = np.asarray(devices, dtype=object).reshape(shape)  # [data, fsdp, model]
  return Mesh(device_grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def logical_to_mesh_spec(
  logical: PartitionSpec, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> PartitionSpec:
  """Translates one PartitionSpec of logical names into one of mesh axis names."""
  return nn.logical_to_mesh_axes(tuple(logical), rules)


def fit_spec_to_shape(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dimensions they do not divide (e.g. vocab 32128 over model=3).

  Example: shape (10, 64) with spec ('model', 'fsdp') on a model=4 mesh -> (None, 'fsdp').
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  fitted = []
  for dim, entry in zip(shape, entries, strict=True):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    kept = []
    for axis in axes:
      if dim % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]) == 0:
        kept.append(axis)
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*fitted)


def param_shardings(
  logical_specs: Any,
  abstract_params: Any,
  mesh: Mesh,
  rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES,
) -> Any:
  """NamedShardings for a parameter tree from its logical PartitionSpecs and shapes."""

  def one(logical, abstract):
    spec = fit_spec_to_shape(logical_to_mesh_spec(logical, rules), abstract.shape, mesh)
    return NamedSharding(mesh, spec)

  return jax.tree.map(
    one, logical_specs, abstract_params, is_leaf=lambda x: isinstance(x, PartitionSpec)
  )


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def derived_state_shardings(
  abstract_tree: Any, abstract_params: Any, params_shardings: Any, mesh: Mesh
) -> Any:
  """Shardings for a tree whose leaves mirror parameters (optimizer state, gradients).

  Each leaf is matched to the parameter whose path is a suffix of its own path. A leaf of the
  parameter's shape takes its sharding; a leaf with one dimension fewer (Adafactor's factored row /
  column statistics) takes the sharding minus the removed dimension; anything else (step counts,
  unfactored placeholders) is replicated.
  """
  by_path = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    by_path[_path_names(path)] = leaf.shape
  shardings_by_path = {
    _path_names(path): sharding
    for path, sharding in jax.tree_util.tree_flatten_with_path(params_shardings)[0]
  }
  replicated = NamedSharding(mesh, PartitionSpec())

  def one(path, leaf):
    names = _path_names(path)
    shape = getattr(leaf, "shape", ())
    for start in range(len(names)):
      param_shape = by_path.get(names[start:])
      if param_shape is None:
        continue
      spec = list(shardings_by_path[names[start:]].spec)
      spec += [None] * (len(param_shape) - len(spec))
      if tuple(shape) == tuple(param_shape):
        return NamedSharding(mesh, PartitionSpec(*spec))
      if len(shape) == len(param_shape) - 1:
        for removed in reversed(range(len(param_shape))):
          if tuple(param_shape[:removed]) + tuple(param_shape[removed + 1 :]) == tuple(shape):
            reduced = PartitionSpec(*(spec[:removed] + spec[removed + 1 :]))
            return NamedSharding(mesh, fit_spec_to_shape(reduced, shape, mesh))
      return replicated
    return replicated

  return jax.tree_util.tree_map_with_path(one, abstract_tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of every batch array: rows over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_MESH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch dimension is split."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def make_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-process numpy batches into global arrays sharded over data x fsdp.

  Each process passes its own rows (global_batch / process_count of them); the global batch is
  their concatenation in process order.
  Example: 2 processes each holding `{"x": int32[4, 16]}` -> `{"x": global int32[8, 16]}`.
  """
  sharding = batch_sharding(mesh)
  out = {}
  for name, local in local_batch.items():
    local = np.asarray(local)
    global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    out[name] = jax.make_array_from_process_local_data(sharding, local, global_shape)
  return out


def host_array_to_sharded(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Places a host array that every process holds in full onto `sharding`, shard by shard.

  No single device ever holds the whole array (used for `init_from` checkpoints).
  """
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


@contextlib.contextmanager
def active(mesh: Mesh | None):
  """Traces and runs under `mesh` with the logical axis rules (so sharded kernels such as flash
  attention split over it); does nothing for None."""
  if mesh is None:
    yield
    return
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield


def padded_rows(rows: int, mesh: Mesh | None) -> int:
  """`rows` rounded up to a multiple of the batch shards (data x fsdp), so that every device
  gets the same number of rows; `rows` itself without a mesh.

  Example: 6 rows on a data=2 x fsdp=2 mesh -> 8 (2 rows per batch shard).
  """
  if mesh is None:
    return rows
  shards = batch_shards(mesh)
  return -(-rows // shards) * shards


def place_batch(value: np.ndarray, mesh: Mesh | None) -> jax.Array | np.ndarray:
  """A host batch that every process holds in full, as a global array with rows over
  data x fsdp: each process copies only the rows of its own devices. Without a mesh, `value`
  as it is (jit puts it on the default device)."""
  if mesh is None:
    return value
  return host_array_to_sharded(value, batch_sharding(mesh))


def to_host(value: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) array as numpy on every process: all-gathered
  across processes when this process does not hold every shard (a collective call then)."""
  if isinstance(value, jax.Array) and not value.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))
  return np.asarray(value)


def mesh_of(tree: Any) -> Mesh | None:
  """The mesh a tree's arrays are placed on (their first NamedSharding's), or None."""
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh):
      return sharding.mesh
  return None


def place(values: Any, shardings: Any, dtypes: Any = None) -> Any:
  """A tree of arrays placed with the matching tree of `shardings`.

  Global arrays (and any array in one process) are moved on device (`jax.device_put`, a no-op
  when already so placed). Host values, and single-device arrays of one process among several,
  are cut shard by shard (`host_array_to_sharded`: every process must hold the same full values),
  cast first to the matching entry of `dtypes` (a tree with `.dtype` leaves) when given.
  """

  def one(value, sharding, like=None):
    if isinstance(value, jax.Array) and (
      not value.is_fully_addressable or jax.process_count() == 1
    ):
      return jax.device_put(value, sharding)
    value = np.asarray(value)
    return host_array_to_sharded(value if like is None else value.astype(like.dtype), sharding)

  if dtypes is None:
    return jax.tree.map(one, values, shardings)
  return jax.tree.map(one, values, shardings, dtypes)
