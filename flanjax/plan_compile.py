"""Ahead-of-time compilation for `plan`: topology devices, usable HBM, abstract inputs, compiling.

Nothing here allocates a device buffer. A TPU topology (`v4:2x2x1`, `v5p:2x2x2`, `v5e:4x4`,
`v6e:4x4`, ...) comes from libtpu's topology descriptions, which work on a CPU host (also under
`JAX_PLATFORMS=cpu`); `local` means this machine's own devices (how a GPU host checks itself).
Programs are lowered with `jax.ShapeDtypeStruct`s that carry shardings on a mesh of those
devices and compiled; the compiler's memory and cost analyses are read back, and its
out-of-memory refusal is parsed instead of raised.

TPU v4 topologies are built in megacore mode, as a v4 TPU VM presents them to JAX: one device
per chip (both TensorCores), 32 GiB of HBM. libtpu's default would be one device per TensorCore
with 16 GiB each (the layout DESIGN.md quotes).

Example:
  >>> devices = topology_devices("v4:2x2x1")
  >>> len(devices), devices[0].device_kind
  (4, 'TPU v4')
  >>> usable_hbm(devices)  # the compiler's own figure, parsed from its refusal of 256 GiB
  (33017561088, 'compiler (TPU v4)')
  >>> parse_oom("RESOURCE_EXHAUSTED: ... HLO temporaries (23.84G) exceeds available HBM (15.25G).")
  OutOfMemory(required_bytes=25598186455, available_bytes=16374562816, message='...')
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

LOCAL = "local"
# libtpu topology options per TPU generation (the prefix before ":"); see the module docstring.
TOPOLOGY_OPTIONS = {"v4": {"chip_config_name": "megacore"}}
# HBM per device when the compiler gives no figure (datasheets); the compiler's figure, when
# available, is a little lower (it keeps some HBM for itself).
HBM_BYTES_BY_KIND = {
  "TPU v2": 8 << 30,
  "TPU v3": 16 << 30,
  "TPU v4": 32 << 30,
  "TPU v5 lite": 16 << 30,
  "TPU v5": 95 << 30,
  "TPU v6 lite": 32 << 30,
}
_ALLOW_MULTIPLE = "ALLOW_MULTIPLE_LIBTPU_LOAD"
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"
# The phrasings of libtpu's compile-time OOM (required, available).
_OOM_PATTERNS = (
  re.compile(rf"required for HLO temporaries \({_SIZE}\) exceeds available HBM \({_SIZE}\)"),
  re.compile(rf"Used {_SIZE} of {_SIZE} hbm"),
)


class TopologyError(ValueError):
  """The topology name is unknown, or libtpu (the `tpu` extra) is not installed."""


def libtpu_available() -> bool:
  return importlib.util.find_spec("libtpu") is not None


@contextlib.contextmanager
def _stderr_kept_on_error():
  """Holds back what C++ writes to fd 2 (libtpu's warnings about TPU_ACCELERATOR_TYPE and worker
  hostnames on a CPU host, harmless) and replays it only if the block raises."""
  with tempfile.TemporaryFile() as held:
    saved = os.dup(2)
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      os.write(2, held.read())
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


@contextlib.contextmanager
def _libtpu_lock_shared():
  """libtpu takes /tmp/libtpu_lockfile when it loads, and refuses to load ("Internal error when
  accessing libtpu multi-process lockfile") while any other process holds it, e.g. any JAX
  process started without JAX_PLATFORMS=cpu. Compiling for a topology description touches no
  TPU, so the lock is not needed: ALLOW_MULTIPLE_LIBTPU_LOAD=1 (read when libtpu loads) skips it."""
  previous = os.environ.get(_ALLOW_MULTIPLE)
  os.environ[_ALLOW_MULTIPLE] = "1"
  try:
    yield
  finally:
    if previous is None:
      del os.environ[_ALLOW_MULTIPLE]
    else:
      os.environ[_ALLOW_MULTIPLE] = previous


@functools.lru_cache(maxsize=32)
def topology_devices(topology: str) -> tuple[jax.Device, ...]:
  """The devices of `topology` (compile-only for TPU names; this process's for `local`)."""
  if topology == LOCAL:
    return tuple(jax.devices())
  if not libtpu_available():
    raise TopologyError(
      f"--topology {topology} needs libtpu to compile for TPUs: pip install -e '.[tpu]' "
      "(or use --topology local for this machine's own devices)"
    )
  from jax.experimental import topologies

  generation = topology.split(":", 1)[0]
  options = TOPOLOGY_OPTIONS.get(generation, {})
  try:
    with _stderr_kept_on_error(), _libtpu_lock_shared():
      description = topologies.get_topology_desc(platform="tpu", topology_name=topology, **options)
  except Exception as error:  # libtpu raises JaxRuntimeError / RuntimeError for a bad name
    raise TopologyError(
      f"--topology {topology!r}: libtpu cannot build it ({str(error).splitlines()[0]}); "
      "expected GENERATION:SHAPE, e.g. v4:2x2x1, v5p:2x2x2, v5e:4x4, v6e:4x4, or local"
    ) from None
  return tuple(description.devices)


def bytes_from(number: str, unit: str) -> int:
  """'23.84', 'G' -> 25598186455 (the compiler's G is GiB)."""
  return int(float(number) * _UNITS[unit.upper()])


@dataclasses.dataclass(frozen=True)
class OutOfMemory:
  """The compiler's refusal: bytes it needed and bytes it had (None when it did not say)."""

  required_bytes: int | None
  available_bytes: int | None
  message: str


def parse_oom(message: str) -> OutOfMemory | None:
  """The figures of a RESOURCE_EXHAUSTED compile error, or None if `message` is not one."""
  if "RESOURCE_EXHAUSTED" not in message and "Ran out of memory" not in message:
    return None
  first = next((line for line in message.splitlines() if "memory" in line), message)
  for pattern in _OOM_PATTERNS:
    found = pattern.search(message)
    if found:
      required, available = found.groups()[:2], found.groups()[2:]
      return OutOfMemory(bytes_from(*required), bytes_from(*available), first.strip())
  return OutOfMemory(None, None, first.strip())


def _host_memory_bytes() -> int:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.lru_cache(maxsize=32)
def _compiler_hbm(device: jax.Device) -> int | None:
  """Usable HBM as the TPU compiler states it when refusing a 256 GiB argument, or None."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  too_big = jax.ShapeDtypeStruct((1 << 20, 1 << 16), jnp.float32, sharding=sharding)  # 256 GiB
  try:
    with _stderr_kept_on_error():
      jax.jit(jnp.sum).lower(too_big).compile()
  except Exception as error:  # the refusal we asked for
    oom = parse_oom(str(error))
    return oom.available_bytes if oom else None
  return None


def usable_hbm(devices: Sequence[jax.Device]) -> tuple[int, str]:
  """(bytes one device may use, where the figure comes from)."""
  device = devices[0]
  kind = device.device_kind
  if device.platform == "tpu":
    figure = _compiler_hbm(device)
    if figure:
      return figure, f"compiler ({kind})"
  else:
    with contextlib.suppress(Exception):  # compile-only or CPU devices have no memory stats
      stats = device.memory_stats() or {}
      if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"device bytes_limit ({kind})"
  for prefix in sorted(HBM_BYTES_BY_KIND, key=len, reverse=True):
    if kind.startswith(prefix):
      return HBM_BYTES_BY_KIND[prefix], f"datasheet ({kind})"
  if device.platform == "cpu":
    return _host_memory_bytes() // max(1, len(devices)), "host RAM / devices"
  raise TopologyError(f"no HBM figure for device kind {kind!r}: add it to HBM_BYTES_BY_KIND")


def process_count(devices: Sequence[jax.Device]) -> int:
  """How many hosts the devices span (the training run's process count)."""
  return len({device.process_index for device in devices})


def shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


@dataclasses.dataclass(frozen=True)
class Compiled:
  """What compiling one step gave: the memory analysis per device, FLOPs, time, or the OOM."""

  seconds: float
  argument_bytes: int | None = None
  output_bytes: int | None = None
  alias_bytes: int | None = None
  temp_bytes: int | None = None
  flops_per_device: float | None = None
  oom: OutOfMemory | None = None

  @property
  def total_bytes(self) -> int | None:
    """Peak per device: arguments + outputs - aliased (donated) + temporaries."""
    if self.temp_bytes is None:
      return None
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def compile_step(lower: Callable[[], Any]) -> Compiled:
  """Compiles `lower()` (a `jax.stages.Lowered`); an out-of-memory refusal is returned, not
  raised (any other compile error propagates)."""
  start = time.perf_counter()
  try:
    with _stderr_kept_on_error():
      compiled = lower().compile()
  except Exception as error:
    oom = parse_oom(str(error))
    if oom is None:
      raise
    return Compiled(seconds=time.perf_counter() - start, oom=oom)
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, list | tuple):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return Compiled(
    seconds=seconds,
    argument_bytes=int(memory.argument_size_in_bytes),
    output_bytes=int(memory.output_size_in_bytes),
    alias_bytes=int(memory.alias_size_in_bytes),
    temp_bytes=int(memory.temp_size_in_bytes),
    flops_per_device=float(flops) if flops is not None and flops >= 0 else None,
  )


def abstract(shape: Sequence[int], dtype: Any, sharding: jax.sharding.Sharding):
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


def smallest_divisor_at_least(total: int, minimum: int, step_of: int = 1) -> int | None:
  """Smallest d >= minimum dividing `total` with (total / d) divisible by `step_of`, or None.

  Example: smallest_divisor_at_least(64, 3, step_of=4) -> 4 (64 / 4 = 16 rows, 4 per shard).
  """
  for d in range(max(1, minimum), total + 1):
    if total % d == 0 and (total // d) % step_of == 0:
      return d
  return None
