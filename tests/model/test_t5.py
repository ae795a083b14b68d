"""Parity of the Flax T5 with HF PyTorch T5, packing, and bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from flanjax.model import t5
from flanjax.model.config import T5Config


def _batch(vocab, rng, batch=3, enc_len=11, dec_len=7):
  """Padded encoder/decoder batch with HF-style masks (row lengths differ)."""
  enc = rng.integers(2, vocab, size=(batch, enc_len))
  enc_mask = np.ones_like(enc)
  for row, length in enumerate([enc_len, 6, 3][:batch]):
    enc[row, length:], enc_mask[row, length:] = 0, 0
  dec = rng.integers(2, vocab, size=(batch, dec_len))
  dec[:, 0] = 0  # decoder start token
  dec_mask = np.ones_like(dec)
  dec_mask[1, 5:] = 0
  dec[1, 5:] = 0
  return enc, enc_mask, dec, dec_mask


def test_logits_match_hf(pair):
  model, reference = pair
  enc, enc_mask, dec, dec_mask = _batch(model.config.vocab_size, np.random.default_rng(0))
  ours = np.asarray(
    model.logits(enc, dec, attention_mask=enc_mask, decoder_attention_mask=dec_mask)
  )
  with torch.no_grad():
    theirs = reference(
      input_ids=torch.tensor(enc),
      attention_mask=torch.tensor(enc_mask),
      decoder_input_ids=torch.tensor(dec),
      decoder_attention_mask=torch.tensor(dec_mask),
    ).logits.numpy()
  assert ours.shape == theirs.shape
  valid = dec_mask.astype(bool)  # positions past a row's decoder mask are padding
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=0)
  assert np.abs(ours[valid] - theirs[valid]).max() <= 1e-4


def test_relative_position_bucket_matches_hf():
  from transformers.models.t5.modeling_t5 import T5Attention

  relative = np.arange(-300, 301)[None]
  for bidirectional in (True, False):
    for buckets, distance in ((32, 128), (8, 20), (16, 32)):
      ours = t5.relative_position_bucket(
        jnp.asarray(relative),
        bidirectional=bidirectional,
        num_buckets=buckets,
        max_distance=distance,
      )
      theirs = T5Attention._relative_position_bucket(
        torch.tensor(relative),
        bidirectional=bidirectional,
        num_buckets=buckets,
        max_distance=distance,
      )
      np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def _packed_equivalence(config, params):
  rng = np.random.default_rng(1)
  a_in, b_in = rng.integers(2, config.vocab_size, 5), rng.integers(2, config.vocab_size, 4)
  a_tg, b_tg = rng.integers(2, config.vocab_size, 3), rng.integers(2, config.vocab_size, 4)
  model = t5.T5(config)

  def separate(inputs, targets):
    dec = np.concatenate([[0], targets[:-1]])
    return np.asarray(model.apply({"params": params}, inputs[None], dec[None]))[0]

  # Packed row: [a | b | pad] in both encoder and decoder.
  enc = np.zeros(12, np.int32)
  enc[:5], enc[5:9] = a_in, b_in
  enc_seg = np.array([1] * 5 + [2] * 4 + [0] * 3, np.int32)
  enc_pos = np.array(list(range(5)) + list(range(4)) + [0] * 3, np.int32)
  dec = np.zeros(9, np.int32)
  dec[:3] = np.concatenate([[0], a_tg[:-1]])
  dec[3:7] = np.concatenate([[0], b_tg[:-1]])
  dec_seg = np.array([1] * 3 + [2] * 4 + [0] * 2, np.int32)
  dec_pos = np.array(list(range(3)) + list(range(4)) + [0] * 2, np.int32)
  packed = np.asarray(
    model.apply(
      {"params": params},
      enc[None],
      dec[None],
      encoder_segment_ids=enc_seg[None],
      decoder_segment_ids=dec_seg[None],
      encoder_positions=enc_pos[None],
      decoder_positions=dec_pos[None],
    )
  )[0]
  unsegmented = np.asarray(model.apply({"params": params}, enc[None], dec[None]))[0]
  return packed, unsegmented, separate(a_in, a_tg), separate(b_in, b_tg)


def test_packed_row_equals_separate_examples():
  config = T5Config.tiny(vocab_size=64)
  params = t5.init_params(config, jax.random.PRNGKey(3))
  packed, unsegmented, first, second = _packed_equivalence(config, params)
  np.testing.assert_allclose(packed[:3], first, atol=1e-5)
  np.testing.assert_allclose(packed[3:7], second, atol=1e-5)
  # Without segment ids the second example attends to the first, so its logits differ.
  assert np.abs(unsegmented[3:7] - second).max() > 1e-3


def test_bf16_compute_close_to_f32():
  config = T5Config.tiny(vocab_size=128)
  params = t5.init_params(config, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  enc, _, dec, _ = _batch(config.vocab_size, rng)
  f32 = np.asarray(t5.T5(config).apply({"params": params}, enc, dec))
  bf16_model = t5.T5(config.replace(dtype="bfloat16"))
  bf16 = bf16_model.apply({"params": params}, enc, dec)
  assert bf16.dtype == jnp.float32  # logits are always returned in float32
  bf16 = np.asarray(bf16)
  assert np.all(np.isfinite(bf16))
  # bf16 keeps ~3 significant digits; logits of this model are O(1).
  assert np.abs(bf16 - f32).max() < 0.1 * max(1.0, np.abs(f32).max())
  assert (bf16.argmax(-1) == f32.argmax(-1)).mean() > 0.9


def test_dropout_is_active_only_when_enabled():
  config = T5Config.tiny(dropout_rate=0.5)
  params = t5.init_params(config, jax.random.PRNGKey(0))
  enc, _, dec, _ = _batch(config.vocab_size, np.random.default_rng(0))
  model = t5.T5(config)
  det = model.apply({"params": params}, enc, dec)
  np.testing.assert_array_equal(det, model.apply({"params": params}, enc, dec))
  drop1 = model.apply(
    {"params": params}, enc, dec, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(1)}
  )
  drop2 = model.apply(
    {"params": params}, enc, dec, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(2)}
  )
  assert np.abs(np.asarray(drop1) - np.asarray(drop2)).max() > 1e-3


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scan"])
def test_every_param_has_logical_axes(scan_layers):
  config = T5Config.tiny(scan_layers=scan_layers)
  axes = t5.param_logical_axes(config)
  shapes = t5.abstract_params(config)
  known = {"batch", "length", "embed", "mlp", "heads", "kv", "vocab", "relpos_buckets", "layers"}
  flat_axes = jax.tree_util.tree_leaves_with_path(
    axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )
  flat_shapes = dict(jax.tree_util.tree_leaves_with_path(shapes))
  assert len(flat_axes) == len(flat_shapes)
  for path, spec in flat_axes:
    assert len(spec) == len(flat_shapes[path].shape), path
    assert set(spec) <= known, (path, spec)


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="feed_forward_proj"):
    T5Config(feed_forward_proj="swiglu")
  with pytest.raises(ValueError, match="num_heads"):
    T5Config(num_heads=0)


def test_hf_config_round_trip():
  from tests.model.conftest import V10, V11

  for config in (V10, V11):
    assert T5Config.from_hf_config(config.to_hf_config()) == config
