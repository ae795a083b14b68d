"""Sharded training: optax optimizers, the jitted train step, Orbax checkpoints and the loop.

Nothing here imports TensorFlow or seqio; the launcher passes batches in.
"""

from flanjax.train.config import TrainConfig
from flanjax.train.loop import NonFiniteLossError, run, train
from flanjax.train.optim import OptimizerConfig, make_optimizer, make_schedule

__all__ = [
  "NonFiniteLossError",
  "OptimizerConfig",
  "TrainConfig",
  "make_optimizer",
  "make_schedule",
  "run",
  "train",
]
