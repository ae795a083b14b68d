"""Optimizers and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flanjax.train.optim import OptimizerConfig, make_optimizer, make_schedule


def test_constant_schedule_with_warmup():
  schedule = make_schedule(OptimizerConfig(learning_rate=1e-3, warmup_steps=4), total_steps=100)
  np.testing.assert_allclose(
    [float(schedule(s)) for s in (0, 2, 4, 50)], [0.0, 5e-4, 1e-3, 1e-3], rtol=1e-6
  )


def test_rsqrt_schedule_decays_as_inverse_square_root_after_warmup():
  schedule = make_schedule(
    OptimizerConfig(learning_rate=1e-2, schedule="rsqrt", warmup_steps=100), total_steps=10_000
  )
  np.testing.assert_allclose(
    [float(schedule(s)) for s in (50, 100, 400, 10_000)], [5e-3, 1e-2, 5e-3, 1e-3], rtol=1e-6
  )


def test_cosine_schedule_reaches_the_end_value():
  schedule = make_schedule(
    OptimizerConfig(learning_rate=1e-3, schedule="cosine", warmup_steps=10, end_learning_rate=1e-5),
    total_steps=110,
  )
  np.testing.assert_allclose(
    [float(schedule(s)) for s in (5, 10, 60, 110)], [5e-4, 1e-3, (1e-3 + 1e-5) / 2, 1e-5], rtol=1e-5
  )


@pytest.mark.parametrize(
  "kwargs, key",
  [
    (dict(name="sgd"), "optimizer.name"),
    (dict(schedule="linear"), "optimizer.schedule"),
    (dict(learning_rate=0.0), "optimizer.learning_rate"),
  ],
)
def test_bad_optimizer_settings_name_the_key(kwargs, key):
  with pytest.raises(ValueError, match=key):
    OptimizerConfig(**kwargs)


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_optimizers_minimise_a_quadratic(name):
  params = {"w": jnp.full((4, 3), 2.0)}
  tx = make_optimizer(OptimizerConfig(name=name, learning_rate=0.1), total_steps=100)
  state = tx.init(params)
  loss = lambda p: jnp.sum(jnp.square(p["w"] - 0.5))

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  start = float(loss(params))
  for _ in range(50):
    params, state = step(params, state)
  assert float(loss(params)) < 0.1 * start


def test_gradient_clipping_runs_before_the_optimizer():
  params = {"w": jnp.zeros((10,))}
  clipped = make_optimizer(OptimizerConfig(name="adamw", grad_clip_norm=1.0), total_steps=10)
  unclipped = make_optimizer(OptimizerConfig(name="adamw", grad_clip_norm=0.0), total_steps=10)
  grads = {"w": jnp.full((10,), 100.0)}
  _, clipped_state = clipped.update(grads, clipped.init(params), params)
  _, unclipped_state = unclipped.update(grads, unclipped.init(params), params)
  # Adam's first moment after one step is (1 - b1) * gradient: clipped to global norm 1 or not.
  clipped_mu = clipped_state[1][0].mu["w"]
  unclipped_mu = unclipped_state[0].mu["w"]
  assert float(jnp.linalg.norm(clipped_mu)) == pytest.approx(0.1, rel=1e-4)
  assert float(jnp.linalg.norm(unclipped_mu)) == pytest.approx(0.1 * 100 * np.sqrt(10), rel=1e-4)
