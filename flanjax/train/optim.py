"""Optimizers (Adafactor, AdamW) and learning-rate schedules (constant, warm-up + rsqrt / cosine).

Example:
  >>> cfg = OptimizerConfig(name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=10)
  >>> schedule = make_schedule(cfg, total_steps=100)
  >>> float(schedule(5)), float(schedule(10)), float(schedule(100))  # ramp, peak, end of cosine
  (0.0005, 0.001, 0.0)
  >>> tx = make_optimizer(cfg, total_steps=100)  # clip_by_global_norm -> adamw
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "rsqrt", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer and schedule; FLAN-T5 fine-tuning is Adafactor at a constant 1e-3.

  Attributes:
    name: "adafactor" (default, FLAN's choice; factored second moments, update clipping and
      parameter-scale-relative steps as in t5x) or "adamw".
    learning_rate: peak learning rate.
    schedule: "constant" (after the optional warm-up), "rsqrt" (linear warm-up, then
      lr * sqrt(warmup / step)) or "cosine" (linear warm-up, then cosine decay to
      `end_learning_rate` at the last training step).
    warmup_steps: linear warm-up length (0 = none; rsqrt then decays from step 1).
    grad_clip_norm: clip the gradient's global norm to this before the update (0 = off).
    weight_decay: decoupled weight decay (AdamW) / Adafactor's weight_decay_rate (0 = off).
  """

  name: str = "adafactor"
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  end_learning_rate: float = 0.0
  grad_clip_norm: float = 1.0
  weight_decay: float = 0.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  adafactor_decay_rate: float = 0.8
  adafactor_min_dim_size_to_factor: int = 128

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ValueError(f"optimizer.name={self.name!r} is not one of {OPTIMIZERS}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"optimizer.schedule={self.schedule!r} is not one of {SCHEDULES}")
    if not self.learning_rate > 0:
      raise ValueError(f"optimizer.learning_rate={self.learning_rate!r} must be positive")
    if self.warmup_steps < 0:
      raise ValueError(f"optimizer.warmup_steps={self.warmup_steps!r} must be >= 0")
    if self.grad_clip_norm < 0:
      raise ValueError(f"optimizer.grad_clip_norm={self.grad_clip_norm!r} must be >= 0")


def make_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the number of updates applied so far."""
  peak = config.learning_rate
  warmup = config.warmup_steps

  def warmup_factor(step):
    if warmup == 0:
      return 1.0
    return jnp.minimum(1.0, step / warmup)

  if config.schedule == "constant":
    return lambda step: peak * warmup_factor(jnp.asarray(step, jnp.float32))
  if config.schedule == "rsqrt":

    def rsqrt(step):
      step = jnp.asarray(step, jnp.float32)
      decay = jnp.sqrt(max(warmup, 1) / jnp.maximum(step, max(warmup, 1)))
      return peak * warmup_factor(step) * decay

    return rsqrt
  decay_steps = max(total_steps, warmup + 1)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=peak,
    warmup_steps=warmup,
    decay_steps=decay_steps,
    end_value=config.end_learning_rate,
  )


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """The optax chain: optional global-norm clipping, then the optimizer with its schedule."""
  schedule = make_schedule(config, total_steps)
  if config.name == "adafactor":
    optimizer = optax.adafactor(
      learning_rate=schedule,
      decay_rate=config.adafactor_decay_rate,
      min_dim_size_to_factor=config.adafactor_min_dim_size_to_factor,
      multiply_by_parameter_scale=True,
      clipping_threshold=1.0,
      weight_decay_rate=config.weight_decay or None,
    )
  else:
    optimizer = optax.adamw(
      learning_rate=schedule,
      b1=config.adam_b1,
      b2=config.adam_b2,
      eps=config.adam_eps,
      weight_decay=config.weight_decay,
    )
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
  return optimizer
