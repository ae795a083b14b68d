"""Loss and the pure, jitted, sharded train step.

Loss normalisation (documented choice): the loss is the **per-token mean over real target
tokens of the whole global batch**, i.e. sum(token losses * decoder_loss_weights) /
sum(decoder_loss_weights). Padding and packing therefore do not change the weight of a token;
with gradient accumulation the sum is taken over every microbatch before dividing, so
accumulating M microbatches gives the same gradient as one big batch. (t5x's alternative, a
constant normaliser, is not used: it makes the learning rate depend on how full the batches are.)

Example:
  >>> logits = jnp.zeros((1, 2, 4))  # uniform over a 4-token vocabulary
  >>> sums = cross_entropy_sums(logits, jnp.array([[3, 0]]), jnp.array([[1.0, 0.0]]))
  >>> round(float(sums.cross_entropy / sums.weight), 4)  # log(4), the pad position ignored
  1.3863
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flanjax import partitioning
from flanjax.config import RunConfig
from flanjax.model import t5
from flanjax.model.config import T5Config
from flanjax.train.optim import make_optimizer, make_schedule
from flanjax.train.state import TrainState

ApplyFn = Callable[[Any, dict[str, jax.Array], jax.Array], jax.Array]
# The batch keys the step reads (seqio's EncDecFeatureConverter names); packed rows add the rest.
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


def make_apply_fn(model_config: T5Config) -> ApplyFn:
  """`apply_fn(params, batch, dropout_rng) -> logits [batch, target_len, vocab]`: the model call
  of the train step (dropout on when `model_config.dropout_rate > 0`, packing keys passed on)."""
  model = t5.T5(model_config)
  enable_dropout = model_config.dropout_rate > 0

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


class LossSums(NamedTuple):
  cross_entropy: jax.Array  # sum over tokens of weight * (smoothed) cross-entropy
  z_loss: jax.Array  # sum over tokens of weight * z_loss_coefficient * log(Z)^2
  weight: jax.Array  # sum of the loss weights (number of real target tokens)


def cross_entropy_sums(
  logits: jax.Array,
  targets: jax.Array,
  weights: jax.Array,
  *,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
) -> LossSums:
  """Weighted sums of the token losses; divide by the global weight sum to get the mean.

  With label smoothing s the target distribution is (1 - s) on the target and s / (V - 1)
  elsewhere; its entropy is subtracted so that a perfect prediction scores 0 (as in t5x).
  """
  logits = logits.astype(jnp.float32)  # [batch, length, vocab]
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, length]
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [b, l]
  nll = log_z - target_logits  # [batch, length]
  if label_smoothing > 0:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    mean_log_prob = jnp.mean(logits, axis=-1) - log_z  # [batch, length]
    # -(confidence * log p_t + low * sum_{v != t} log p_v), minus the target entropy.
    nll = (
      confidence * nll
      - low * (vocab * mean_log_prob + nll)
      + confidence * jnp.log(confidence)
      + (vocab - 1) * low * jnp.log(low)
    )
  weights = weights.astype(jnp.float32)
  return LossSums(
    cross_entropy=jnp.sum(nll * weights),
    z_loss=jnp.sum(z_loss * jnp.square(log_z) * weights),
    weight=jnp.sum(weights),
  )


def _split_microbatches(batch: dict[str, jax.Array], num_microbatches: int) -> dict:
  """[batch, ...] -> [microbatches, batch / microbatches, ...], microbatch m = rows m, m+M, ...

  Interleaving (rather than taking contiguous blocks) keeps every row on the device that already
  holds it, so splitting needs no communication. Example with 4 rows, M = 2: rows (0, 2), (1, 3).
  """

  def split(x):
    rows = x.shape[0] // num_microbatches
    x = x.reshape((rows, num_microbatches) + x.shape[1:])  # [rows, micro, ...]
    return jnp.swapaxes(x, 0, 1)  # [micro, rows, ...]

  return jax.tree.map(split, batch)


def make_train_step(
  apply_fn: ApplyFn,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  *,
  dropout_seed: int,
  num_microbatches: int = 1,
  label_smoothing: float = 0.0,
  z_loss: float = 0.0,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
  """The pure step `(state, batch) -> (state, metrics)`.

  `apply_fn(params, batch, dropout_rng)` returns float32 logits [batch, target_len, vocab].
  Dropout uses `fold_in(key(dropout_seed), step)` (and the microbatch index), so a resumed run
  draws the same masks. A step whose loss or gradient norm is not finite leaves params and
  optimizer state unchanged and increments `non_finite_skips`; the loop decides whether to stop.
  """

  def loss_fn(params, micro, rng, total_weight):
    logits = apply_fn(params, micro, rng)
    sums = cross_entropy_sums(
      logits,
      micro["decoder_target_tokens"],
      micro["decoder_loss_weights"],
      label_smoothing=label_smoothing,
      z_loss=z_loss,
    )
    return (sums.cross_entropy + sums.z_loss) / total_weight, sums

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.key(dropout_seed), state.step)
    total_weight = jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)
    if num_microbatches == 1:
      (loss, sums), grads = grad_fn(state.params, batch, rng, total_weight)
    else:
      micro_batches = _split_microbatches(batch, num_microbatches)

      def accumulate(carry, inputs):
        index, micro = inputs
        (micro_loss, micro_sums), micro_grads = grad_fn(
          state.params, micro, jax.random.fold_in(rng, index), total_weight
        )
        loss, sums, grads = carry
        sums = jax.tree.map(jnp.add, sums, micro_sums)
        return (loss + micro_loss, sums, jax.tree.map(jnp.add, grads, micro_grads)), None

      zeros = (
        jnp.zeros((), jnp.float32),
        LossSums(*(jnp.zeros((), jnp.float32),) * 3),
        jax.tree.map(jnp.zeros_like, state.params),
      )
      (loss, sums, grads), _ = jax.lax.scan(
        accumulate, zeros, (jnp.arange(num_microbatches), micro_batches)
      )
    grad_norm = optax.global_norm(grads)
    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep_new = lambda new, old: jnp.where(is_finite, new, old)
    applied_updates = state.step - state.non_finite_skips  # what the optimizer's count holds
    new_state = state.replace(
      step=state.step + 1,
      params=jax.tree.map(keep_new, new_params, state.params),
      opt_state=jax.tree.map(keep_new, new_opt_state, state.opt_state),
      non_finite_skips=state.non_finite_skips + (1 - is_finite.astype(jnp.int32)),
    )
    metrics = {
      "loss": loss,
      "cross_entropy": sums.cross_entropy / total_weight,
      "z_loss": sums.z_loss / total_weight,
      "grad_norm": grad_norm,
      "learning_rate": jnp.asarray(schedule(applied_updates), jnp.float32),
      "is_finite": is_finite,
      "target_tokens": sums.weight,
      "input_tokens": jnp.sum(batch["encoder_input_tokens"] != 0),
      "non_finite_skips": new_state.non_finite_skips,
    }
    return new_state, metrics

  return train_step


def jit_train_step(
  train_step: Callable, state_shardings: TrainState, mesh: Mesh
) -> Callable[[TrainState, dict[str, jax.Array]], tuple]:
  """`jax.jit` with explicit shardings and donated state (the "pjit"), run under `mesh`.

  The batch is sharded over data x fsdp; metrics come back replicated.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(
    train_step,
    in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
    out_shardings=(state_shardings, replicated),
    donate_argnums=(0,),
  )

  def run(state, batch):
    with jax.set_mesh(mesh):
      return jitted(state, batch)

  run.jitted = jitted
  return run


def jit_run_train_step(
  rc: RunConfig, state_shardings: TrainState, mesh: Mesh
) -> Callable[[TrainState, dict[str, jax.Array]], tuple]:
  """The run's jitted train step, built from its RunConfig: what the loop runs and what `plan`
  compiles (one construction, so the two cannot drift apart)."""
  return jit_train_step(
    make_train_step(
      make_apply_fn(rc.model),
      make_optimizer(rc.optimizer, rc.train.steps),
      make_schedule(rc.optimizer, rc.train.steps),
      dropout_seed=rc.seed + 1,
      num_microbatches=rc.train.microbatches,
      label_smoothing=rc.train.label_smoothing,
      z_loss=rc.train.z_loss,
    ),
    state_shardings,
    mesh,
  )
