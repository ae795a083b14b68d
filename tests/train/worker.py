"""A training run in its own process, for the tests that need a fresh device count or a kill.

Usage: python tests/train/worker.py '<json spec>'. The parent sets XLA_FLAGS (device count) and,
for multi-process runs, FLANJAX_COORDINATOR / FLANJAX_NUM_PROCESSES / FLANJAX_PROCESS_ID.
Spec keys: workdir, steps, mesh [data, fsdp, model], batch_size, checkpoint_every, keep,
kill_at (SIGKILL itself when batch `kill_at` is requested, once checkpoint `wait_for` is final),
sigterm_at (SIGTERM itself when batch `sigterm_at` is requested), out (result JSON, process 0),
end_at / raise_at [process, batch] (that process's stream ends / raises ValueError there),
crash_at [process, step] (that process raises RuntimeError after the step: not a data error).
"""

import json
import os
import pathlib
import signal
import sys
import time

# Make the repository importable when the package is not installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from flanjax.train import distributed  # noqa: E402

distributed.initialize_from_env()

import jax  # noqa: E402
import ml_collections  # noqa: E402

from flanjax.train import loop  # noqa: E402
from flanjax.train.synthetic import SyntheticTask  # noqa: E402
from tests.train import helpers  # noqa: E402


def make_config(spec: dict) -> ml_collections.ConfigDict:
  config = helpers.tiny_config(
    steps=spec["steps"],
    batch_size=spec.get("batch_size", 8),
    checkpoint_every=spec.get("checkpoint_every", 0),
    keep_checkpoints=spec.get("keep", 3),
  )
  config.mesh.data, config.mesh.fsdp, config.mesh.model = spec.get("mesh", (1, -1, 1))
  config.model.update(spec.get("model", {}))
  return config


class Interrupting:
  """Wraps the data stream; signals this process when a given batch is requested."""

  def __init__(self, inner, spec, checkpoint_dir):
    self.inner, self.spec, self.checkpoint_dir = inner, spec, checkpoint_dir

  def __iter__(self):
    return self

  def __next__(self):
    position = self.inner.get_state()["position"]
    if position == self.spec.get("kill_at"):
      marker = self.checkpoint_dir / str(self.spec["wait_for"]) / "_CHECKPOINT_METADATA"
      deadline = time.time() + 60
      while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
      os.kill(os.getpid(), signal.SIGKILL)
    if (
      position == self.spec.get("sigterm_at")
      and self.spec.get("sigterm_process", jax.process_index()) == jax.process_index()
    ):
      os.kill(os.getpid(), signal.SIGTERM)
    if self.spec.get("end_at") == [jax.process_index(), position]:
      raise StopIteration
    if self.spec.get("raise_at") == [jax.process_index(), position]:
      raise ValueError(f"injected data failure at batch {position}")
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def param_specs(train_config) -> dict:
  """Mesh PartitionSpecs the state uses for parameters and Adafactor statistics, by path."""
  from flanjax import partitioning
  from flanjax.model import t5
  from flanjax.train import optim, state

  mesh = partitioning.make_mesh(train_config.mesh)
  abstract, shardings = state.abstract_train_state(
    init_fn=lambda rng: t5.init_params(train_config.model, rng),
    logical_specs=t5.param_logical_axes(train_config.model),
    optimizer=optim.make_optimizer(train_config.optimizer, 10),
    mesh=mesh,
  )
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  return {
    jax.tree_util.keystr(path): [list(a) if isinstance(a, tuple) else a for a in sharding.spec]
    for path, sharding in flat
  }


def main():
  spec = json.loads(sys.argv[1])
  config = make_config(spec)
  workdir = pathlib.Path(spec["workdir"])
  data = SyntheticTask(
    batch_size=config.train.batch_size,
    input_length=16,
    target_length=16,
    vocab_size=64,
    max_tokens=12,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  eval_fn = None
  if spec.get("crash_at"):
    config.train.eval_every = 1

    def eval_fn(step, params):
      if [jax.process_index(), step] == spec["crash_at"]:
        if spec.get("hard"):
          os._exit(3)
        raise RuntimeError(f"injected crash after step {step}")
      return {}

  result = loop.train(
    helpers.run_config(config),
    workdir,
    Interrupting(data, spec, workdir / "checkpoints"),
    eval_fn=eval_fn,
  )
  if jax.process_index() == 0 and spec.get("out"):
    result["device_count"] = jax.device_count()
    result["process_count"] = jax.process_count()
    result["param_specs"] = param_specs(helpers.run_config(config))
    pathlib.Path(spec["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
  main()
