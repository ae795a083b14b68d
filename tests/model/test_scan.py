"""Remat and scanned layers: same loss and gradients as the plain model; tree converters."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flanjax.model import t5
from flanjax.model.config import T5Config

# Unequal depths, so a converter that mixes up the two stacks fails.
CONFIG = T5Config.tiny(
  vocab_size=64, d_model=32, d_ff=48, d_kv=8, num_layers=1, num_decoder_layers=2
)


def _batch():
  rng = np.random.default_rng(0)
  enc = rng.integers(2, CONFIG.vocab_size, (2, 9))
  enc[1, 5:] = 0  # a padded row
  targets = rng.integers(2, CONFIG.vocab_size, (2, 6))
  dec = np.concatenate([np.zeros((2, 1), np.int64), targets[:, :-1]], axis=1)
  return enc, dec, targets


def _loss(config, params):
  """Token-mean cross-entropy of the teacher-forced logits."""
  enc, dec, targets = _batch()
  logits = t5.T5(config).apply({"params": params}, enc, dec)  # [batch, length, vocab]
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


@pytest.fixture(scope="module")
def reference():
  params = t5.init_params(CONFIG, jax.random.PRNGKey(0))
  loss, grads = jax.jit(jax.value_and_grad(lambda p: _loss(CONFIG, p)))(params)
  return params, loss, grads


@pytest.mark.parametrize(
  "scan_layers, remat",
  [(False, "full"), (False, "dots"), (True, "none"), (True, "full"), (True, "dots")],
)
def test_remat_and_scan_keep_loss_and_gradients(reference, scan_layers, remat):
  params, loss, grads = reference
  config = CONFIG.replace(scan_layers=scan_layers, remat=remat)
  if scan_layers:
    params = t5.stack_layers(params, config)
  grad_fn = jax.value_and_grad(lambda p: _loss(config, p))
  if remat != "none":  # the layers really are rematerialised
    assert re.search(r"= (checkpoint|remat\w*)\[", str(jax.make_jaxpr(grad_fn)(params)))
  got_loss, got_grads = jax.jit(grad_fn)(params)
  if scan_layers:
    got_grads = t5.unstack_layers(got_grads, config)
  np.testing.assert_allclose(got_loss, loss, atol=1e-5, rtol=0)
  assert jax.tree.structure(got_grads) == jax.tree.structure(grads)
  for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_stack_unstack_round_trip_and_init_follows_layout():
  params = t5.init_params(CONFIG, jax.random.PRNGKey(1))
  scanned = CONFIG.replace(scan_layers=True)
  stacked = t5.stack_layers(params, scanned)
  assert stacked["encoder_layers"]["attention"]["q"].shape == (1, 32, 4, 8)
  assert stacked["decoder_layers"]["mlp"]["wo"].shape == (2, 48, 32)
  assert not any(k.startswith("encoder_layers_") for k in stacked)
  back = t5.unstack_layers(stacked, scanned)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  # Same seed, same model, whatever the layout; abstract shapes follow the layout.
  jax.tree.map(
    np.testing.assert_array_equal, t5.init_params(scanned, jax.random.PRNGKey(1)), stacked
  )
  shapes = jax.tree.map(lambda x: x.shape, t5.abstract_params(scanned))
  assert shapes == jax.tree.map(lambda x: x.shape, stacked)
  with pytest.raises(ValueError, match="already stacked"):
    t5.stack_layers(stacked, scanned)


def test_scanned_params_carry_the_layers_axis():
  config = CONFIG.replace(scan_layers=True)
  axes = t5.param_logical_axes(config)
  is_spec = lambda x: isinstance(x, P)
  assert axes["encoder_layers"]["attention"]["q"] == P("layers", "embed", "heads", "kv")
  assert axes["decoder_layers"]["mlp"]["wo"] == P("layers", "mlp", "embed")
  assert axes["token_embedder"]["embedding"] == P("vocab", "embed")
  for path, spec in jax.tree_util.tree_leaves_with_path(axes, is_leaf=is_spec):
    stacked = "_layers" in jax.tree_util.keystr(path)
    assert (spec[0] == "layers") == stacked, (path, spec)


def test_cached_decoding_methods_refuse_scanned_params():
  config = CONFIG.replace(scan_layers=True)
  params = t5.init_params(config, jax.random.PRNGKey(0))
  encoded = jnp.zeros((1, 4, config.d_model))
  with pytest.raises(ValueError, match="unstack_layers"):
    t5.T5(config).apply({"params": params}, encoded, method=t5.T5.cross_kv)


def test_execution_fields_are_validated():
  with pytest.raises(ValueError, match=r"T5Config\.remat='some'.*'none', 'full', 'dots'"):
    T5Config(remat="some")
  with pytest.raises(ValueError, match=r"T5Config\.attention='fast'.*'xla', 'flash'"):
    T5Config(attention="fast")
  with pytest.raises(ValueError, match=r"T5Config\.scan_layers"):
    T5Config(scan_layers="yes")
