"""attention="flash" (the Pallas TPU kernel, interpreted on CPU) against the XLA path."""

import logging
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanjax.model import attention, t5
from flanjax.model.config import T5Config
from tests.train.helpers import cpu_env

# The kernel needs lengths that are multiples of 128; the model stays tiny otherwise.
CONFIG = T5Config.tiny(
  vocab_size=64, d_model=32, d_ff=48, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1
)
LENGTH = 128


def _inputs(packed: bool):
  """Two rows of 128 tokens: unpacked with a padded row, or packed as [a | b | padding]."""
  rng = np.random.default_rng(0)
  enc = rng.integers(2, CONFIG.vocab_size, (2, LENGTH))
  dec = rng.integers(2, CONFIG.vocab_size, (2, LENGTH))
  if not packed:
    enc[1, 70:] = 0
    return enc, dec, {}
  segments = np.zeros((2, LENGTH), np.int32)
  segments[:, :50], segments[:, 50:110] = 1, 2  # then 18 padding positions
  positions = np.where(segments == 2, np.arange(LENGTH) - 50, np.arange(LENGTH)) * (segments > 0)
  positions = positions.astype(np.int32)
  enc, dec = enc * (segments > 0), dec * (segments > 0)
  packing = dict(
    encoder_segment_ids=segments,
    decoder_segment_ids=segments,
    encoder_positions=positions,
    decoder_positions=positions,
  )
  return enc, dec, packing


def _loss_and_logits(config, params, packed):
  enc, dec, packing = _inputs(packed)
  logits = t5.T5(config).apply({"params": params}, enc, dec, **packing)  # [batch, length, vocab]
  targets = jnp.roll(jnp.asarray(dec), -1, axis=1)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
  return -jnp.mean(logp * (dec > 0)), logits


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_flash_matches_xla_logits_and_gradients(packed):
  params = t5.init_params(CONFIG, jax.random.PRNGKey(0))
  results = {}
  for kind in ("xla", "flash"):
    config = CONFIG.replace(attention=kind)
    grad_fn = jax.value_and_grad(
      lambda p, config=config: _loss_and_logits(config, p, packed), has_aux=True
    )
    if kind == "flash":  # the kernel really runs (interpreted), no silent fallback
      assert "pallas_call" in str(jax.make_jaxpr(grad_fn)(params))
    results[kind] = jax.jit(grad_fn)(params)
  (loss, logits), grads = results["xla"]
  (flash_loss, flash_logits), flash_grads = results["flash"]
  # Every real position (packed padding rows may differ: the kernel masks by segment ids).
  real = (_inputs(packed)[1] > 0)[..., None]
  np.testing.assert_allclose(flash_logits * real, logits * real, atol=1e-5, rtol=0)
  np.testing.assert_allclose(flash_loss, loss, atol=1e-5, rtol=0)
  for got, want in zip(jax.tree.leaves(flash_grads), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_flash_with_scan_and_remat_matches_xla():
  params = t5.init_params(CONFIG, jax.random.PRNGKey(1))
  fast = CONFIG.replace(attention="flash", scan_layers=True, remat="dots")
  loss_fn = lambda config, p: _loss_and_logits(config, p, True)[0]
  want = jax.jit(jax.grad(lambda p: loss_fn(CONFIG, p)))(params)
  got = jax.jit(jax.grad(lambda p: loss_fn(fast, p)))(t5.stack_layers(params, fast))
  got = t5.unstack_layers(got, fast)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_unsupported_lengths_fall_back_to_xla_with_a_warning(caplog, monkeypatch):
  monkeypatch.setattr(attention, "_warned", set())  # the warning is logged once per process
  params = t5.abstract_params(CONFIG)
  enc, dec = np.full((1, 20), 5), np.full((1, 12), 7)
  program = lambda config: str(
    jax.make_jaxpr(lambda p: t5.T5(config).apply({"params": p}, enc, dec))(params)
  )
  with caplog.at_level(logging.WARNING):
    flash = program(CONFIG.replace(attention="flash"))
  assert flash == program(CONFIG)  # exactly the XLA program
  assert "falls back to the XLA path: query length 20 is not a multiple of 128" in caplog.text


def test_unsupported_reason_names_the_shape():
  assert attention.unsupported_reason(256, 512, 64) is None
  assert attention.unsupported_reason(100, 128, 64) == "query length 100 is not a multiple of 128"
  assert attention.unsupported_reason(128, 96, 64) == "key length 96 is not a multiple of 128"
  assert "head size 192" in attention.unsupported_reason(128, 128, 192)


def test_tpu_program_uses_the_real_kernel(monkeypatch):
  """Ahead-of-time for a TPU from this CPU host: the Mosaic kernel (not the interpreter) is
  lowered and compiles, forward and backward."""
  pytest.importorskip("libtpu")
  from jax.experimental import topologies

  # No TPU is touched, so libtpu's one-process lockfile (held by any other JAX process that
  # loaded libtpu) is not needed; the variable is read when libtpu loads.
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

  device = topologies.get_topology_desc(platform="tpu", topology_name="v4:2x2x1").devices[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  config = CONFIG.replace(attention="flash")
  on_tpu = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  params = jax.tree.map(on_tpu, t5.abstract_params(config))
  tokens = on_tpu(jax.ShapeDtypeStruct((2, LENGTH), jnp.int32))
  loss = lambda p, enc, dec: jnp.mean(t5.T5(config).apply({"params": p}, enc, dec))
  lowered = jax.jit(jax.grad(loss)).lower(params, tokens, tokens)
  assert "tpu_custom_call" in lowered.as_text()
  lowered.compile()


_SHARDED = """
import flax.linen as nn, jax, numpy as np
from flanjax import partitioning
from flanjax.model import t5
from tests.model.test_attention import CONFIG, _loss_and_logits, _inputs
mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1, fsdp=2, model=2))
params = t5.init_params(CONFIG, jax.random.PRNGKey(2))
real = (_inputs(True)[1] > 0)[..., None]
out = {}
for kind in ("xla", "flash"):
  config = CONFIG.replace(attention=kind)
  fn = jax.jit(jax.value_and_grad(lambda p: _loss_and_logits(config, p, True), has_aux=True))
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
    if kind == "flash":
      assert "shard_map" in str(jax.make_jaxpr(fn)(params))
    (loss, logits), grads = fn(params)
  out[kind] = (loss, logits * real, grads)
for got, want in zip(jax.tree.leaves(out["flash"]), jax.tree.leaves(out["xla"]), strict=True):
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
print("OK", dict(mesh.shape))
"""


def test_flash_under_a_mesh_splits_batch_and_heads():
  """4 CPU devices, batch over fsdp=2 and heads over model=2: the kernel runs per shard
  (shard_map) with its position bias, masks and segment ids split to match, and equals XLA."""
  run = subprocess.run(
    [sys.executable, "-c", _SHARDED], env=cpu_env(4), capture_output=True, text=True, timeout=600
  )
  assert run.returncode == 0, run.stdout + run.stderr
  assert "OK {'data': 1, 'fsdp': 2, 'model': 2}" in run.stdout
