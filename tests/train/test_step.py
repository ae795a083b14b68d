"""Loss and the jitted train step (a linear stand-in model keeps these fast; the loop tests use
the real T5)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from flanjax import partitioning
from flanjax.train.optim import OptimizerConfig, make_optimizer, make_schedule
from flanjax.train.state import create_train_state
from flanjax.train.step import cross_entropy_sums, jit_train_step, make_train_step

VOCAB = 11


def test_cross_entropy_matches_numpy_and_ignores_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, VOCAB)).astype(np.float32)
  targets = np.array([[3, 4, 0], [5, 0, 0]])
  weights = (targets != 0).astype(np.float32)
  sums = cross_entropy_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -(log_probs[0, 0, 3] + log_probs[0, 1, 4] + log_probs[1, 0, 5])
  assert float(sums.cross_entropy) == pytest.approx(expected, rel=1e-5)
  assert float(sums.weight) == 3.0


def test_label_smoothing_is_zero_at_the_smoothed_target_and_z_loss_adds_log_z_squared():
  smoothing = 0.1
  target_probs = np.full(VOCAB, smoothing / (VOCAB - 1))
  target_probs[2] = 1 - smoothing
  logits = jnp.asarray(np.log(target_probs))[None, None]  # [1, 1, vocab], log Z = 0
  sums = cross_entropy_sums(
    logits, jnp.array([[2]]), jnp.ones((1, 1)), label_smoothing=smoothing, z_loss=1e-4
  )
  assert float(sums.cross_entropy) == pytest.approx(0.0, abs=1e-5)
  shifted = cross_entropy_sums(logits + 3.0, jnp.array([[2]]), jnp.ones((1, 1)), z_loss=1e-4)
  assert float(shifted.z_loss) == pytest.approx(1e-4 * 9.0, rel=1e-4)


def _linear_model():
  def init_fn(rng):
    return {"embedding": jax.random.normal(rng, (VOCAB, 8)) * 0.1, "head": jnp.zeros((8, VOCAB))}

  def apply_fn(params, batch, dropout_rng):
    del dropout_rng
    context = params["embedding"][batch["encoder_input_tokens"]].mean(1)  # [batch, 8]
    hidden = params["embedding"][batch["decoder_input_tokens"]] + context[:, None]  # [b, t, 8]
    return hidden @ params["head"]  # [batch, target_len, vocab]

  logical = {"embedding": PartitionSpec("vocab", "embed"), "head": PartitionSpec("embed", "vocab")}
  return init_fn, apply_fn, logical


def _batch(rows=8, nan=False):
  rng = np.random.default_rng(1)
  targets = rng.integers(1, VOCAB, size=(rows, 5)).astype(np.int32)
  targets[::2, 3:] = 0  # ragged rows: per-token normalisation must not depend on the split
  weights = (targets != 0).astype(np.float32)
  if nan:
    weights[0, 0] = np.nan
  decoder_inputs = np.concatenate([np.zeros((rows, 1), np.int32), targets[:, :-1]], axis=1)
  return {
    "encoder_input_tokens": rng.integers(1, VOCAB, size=(rows, 6)).astype(np.int32),
    "decoder_input_tokens": decoder_inputs,
    "decoder_target_tokens": targets,
    "decoder_loss_weights": weights,
  }


def _run_step(num_microbatches, batch):
  init_fn, apply_fn, logical = _linear_model()
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1, fsdp=-1, model=1))
  config = OptimizerConfig(name="adamw", learning_rate=1e-2)
  optimizer = make_optimizer(config, 10)
  state, shardings = create_train_state(
    init_fn=init_fn, logical_specs=logical, optimizer=optimizer, mesh=mesh, seed=0
  )
  before = jax.device_get(state.params)
  step = jit_train_step(
    make_train_step(
      apply_fn,
      optimizer,
      make_schedule(config, 10),
      dropout_seed=0,
      num_microbatches=num_microbatches,
    ),
    shardings,
    mesh,
  )
  state, metrics = step(state, partitioning.make_global_batch(batch, mesh))
  return before, jax.device_get(state), jax.device_get(metrics)


def test_gradient_accumulation_equals_one_big_batch():
  _, whole, whole_metrics = _run_step(1, _batch())
  _, accumulated, accumulated_metrics = _run_step(4, _batch())
  assert float(accumulated_metrics["loss"]) == pytest.approx(float(whole_metrics["loss"]), rel=1e-5)
  assert float(whole_metrics["target_tokens"]) == float(_batch()["decoder_loss_weights"].sum())
  for name in ("embedding", "head"):
    np.testing.assert_allclose(accumulated.params[name], whole.params[name], rtol=1e-5, atol=1e-7)


def test_non_finite_step_keeps_the_state_and_counts_the_skip():
  before, state, metrics = _run_step(1, _batch(nan=True))
  assert not bool(metrics["is_finite"]) and int(state.non_finite_skips) == 1
  assert int(state.step) == 1
  for name in before:
    np.testing.assert_array_equal(state.params[name], before[name])
  # The optimizer's count did not advance: the schedule is read at applied updates (0).
  counts = optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")
  assert counts and all(int(count) == 0 for _, count in counts)
