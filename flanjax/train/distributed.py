"""Multi-host setup from the launcher's environment, and small cross-process helpers.

Environment read by `initialize_from_env` (set by `tools/launch.py --launcher multiprocess`):
  FLANJAX_COORDINATOR     host:port of process 0's coordination service
  FLANJAX_NUM_PROCESSES   total number of processes
  FLANJAX_PROCESS_ID      this process's index, 0-based
  FLANJAX_LOCAL_DEVICE_IDS optional comma list of local device ids
Under SLURM (SLURM_JOB_ID, SLURM_NTASKS > 1) and on Cloud TPU VMs `jax.distributed.initialize()`
detects everything itself. On CPU, collectives go through gloo.

Example:
  >>> os.environ.update(FLANJAX_COORDINATOR="10.0.0.1:12345", FLANJAX_NUM_PROCESSES="2",
  ...                   FLANJAX_PROCESS_ID="1")
  >>> initialize_from_env()
  (1, 2)
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from flanjax.train import env

_ENV_COORDINATOR = env.COORDINATOR_ENV
_ENV_NUM_PROCESSES = env.NUM_PROCESSES_ENV
_ENV_PROCESS_ID = env.PROCESS_ID_ENV
_ENV_LOCAL_DEVICES = env.LOCAL_DEVICE_IDS_ENV


def _use_gloo_on_cpu() -> None:
  # Must happen before the backend starts; harmless for GPU/TPU runs.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
  """Calls `jax.distributed.initialize` when the environment describes several processes.

  Returns (process_index, process_count). A single-process environment is a no-op.
  Raises ValueError naming the variable when the FLANJAX_* variables are incomplete or invalid.
  """
  env = os.environ if environ is None else environ
  if _ENV_COORDINATOR in env or _ENV_NUM_PROCESSES in env:
    missing = [k for k in (_ENV_COORDINATOR, _ENV_NUM_PROCESSES, _ENV_PROCESS_ID) if k not in env]
    if missing:
      raise ValueError(f"multi-process launch: environment variable(s) {missing} not set")
    try:
      num_processes = int(env[_ENV_NUM_PROCESSES])
      process_id = int(env[_ENV_PROCESS_ID])
    except ValueError as error:
      raise ValueError(f"{_ENV_NUM_PROCESSES} and {_ENV_PROCESS_ID} must be integers") from error
    if not 0 <= process_id < num_processes:
      raise ValueError(f"{_ENV_PROCESS_ID}={process_id} is outside [0, {num_processes})")
    if num_processes == 1:
      return 0, 1
    local_ids = env.get(_ENV_LOCAL_DEVICES)
    _use_gloo_on_cpu()
    jax.distributed.initialize(
      coordinator_address=env[_ENV_COORDINATOR],
      num_processes=num_processes,
      process_id=process_id,
      local_device_ids=[int(i) for i in local_ids.split(",")] if local_ids else None,
    )
  elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env:
    _use_gloo_on_cpu()
    jax.distributed.initialize()
  return jax.process_index(), jax.process_count()


def gather_json(local: Any) -> list[Any]:
  """Every process's JSON-serialisable `local` value, in process order (a collective call).

  Example: process 0 passes {"pos": 3}, process 1 {"pos": 7} -> both get [{"pos": 3}, {"pos": 7}].
  """
  if jax.process_count() == 1:
    return [json.loads(json.dumps(local))]
  encoded = np.frombuffer(json.dumps(local, sort_keys=True).encode(), dtype=np.uint8)
  lengths = multihost_utils.process_allgather(np.asarray([encoded.size], np.int32))  # [procs, 1]
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[: encoded.size] = encoded
  gathered = multihost_utils.process_allgather(padded)  # [procs, max_len]
  return [
    json.loads(bytes(row[: int(n)]).decode())
    for row, n in zip(gathered, lengths.reshape(-1), strict=True)
  ]


def gather_ints(values: list[int]) -> np.ndarray:
  """Every process's small int vector, as int32 [process_count, len(values)] (a collective call).

  Example: process 0 passes [0, 1], process 1 [2, 0] -> both get [[0, 1], [2, 0]].
  """
  local = np.asarray(values, np.int32).reshape(1, -1)  # [1, k]
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local[0])).reshape(jax.process_count(), -1)


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is True on at least one (a collective call)."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))
  return bool(np.any(flags))


def exit_without_barrier_at_exit(code: int = 1) -> None:
  """After an error in a multi-process run: ends this process with `code` at interpreter exit,
  before jax's own exit hook runs `jax.distributed.shutdown()`.

  That shutdown is a barrier over every process: a process failing alone would wait there (up to
  300 s) while the others wait for it in a collective. Exiting closes its connections instead,
  so their collectives fail at once and they end too (each through this same path). The error
  has been printed by then (Python prints an uncaught exception before exit hooks run); the exit
  code is `code` whatever the caller does after. No-op with one process.
  Example: `except BaseException: exit_without_barrier_at_exit(); raise`.
  """
  if jax.process_count() == 1:
    return

  def end_now() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    os._exit(code)

  atexit.register(end_now)  # exit hooks run last-registered first: before jax's
