"""Fixtures of the training tests: compilation caches and worker subprocesses."""

import json
import pathlib
import subprocess
import sys

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from tests.train.helpers import cpu_env

WORKER = pathlib.Path(__file__).with_name("worker.py")


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
  """A persistent compilation cache shared by this session's worker subprocesses."""
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module", autouse=True)
def in_process_compile_cache(compile_cache):
  """Lets repeated in-process runs of the same tiny program skip XLA (20 s -> 2 s per run).

  The previous settings are restored afterwards, so other test modules see no change.
  """
  names = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
  )
  previous = {name: getattr(jax.config, name) for name in names}
  jax.config.update("jax_compilation_cache_dir", compile_cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  compilation_cache.reset_cache()
  yield
  for name, value in previous.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


@pytest.fixture
def start_worker(compile_cache):
  """start_worker(spec, devices=1, process_id=None, num_processes=1, port=None) -> Popen."""
  procs = []

  def start(spec, *, devices=1, process_id=None, num_processes=1, port=None):
    env = cpu_env(
      devices,
      process_id,
      num_processes,
      port,
      JAX_COMPILATION_CACHE_DIR=compile_cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    proc = subprocess.Popen(
      [sys.executable, str(WORKER), json.dumps(spec)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    procs.append(proc)
    return proc

  yield start
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
