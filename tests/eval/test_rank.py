"""Rank classification against brute-force per-option scoring and a model fine-tuned in the test."""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flanjax.eval import rank
from flanjax.model import t5 as t5_lib
from flanjax.model.config import T5Config
from flanjax.model.hf import T5Model

EOS = 1


def _tiny_config(**overrides):
  base = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
  base.update(overrides)
  return T5Config.tiny(**base)


_init_params = jax.jit(t5_lib.init_params, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _pair_log_probs(config, params, enc, tgt):
  logits = t5_lib.T5(config).apply({"params": params}, enc, rank.shift_right(tgt))  # [1, lt, v]
  return jax.nn.log_softmax(logits, axis=-1)[0]  # [lt, vocab]


def _brute_force_score(config, params, input_ids, option_ids):
  """log p(option | input), one unpadded forward pass for this single pair."""
  enc = jnp.asarray([input_ids], jnp.int32)  # [1, li]
  tgt = jnp.asarray([option_ids], jnp.int32)  # [1, lt]
  log_probs = np.asarray(_pair_log_probs(config, params, enc, tgt))  # [lt, vocab]
  return float(sum(log_probs[i, t] for i, t in enumerate(option_ids)))


@pytest.fixture(scope="module")
def random_model():
  config = _tiny_config()
  return T5Model(config, _init_params(config, jax.random.PRNGKey(3)))


def _random_problem(num_examples, seed=0, vocab=64):
  rng = np.random.default_rng(seed)
  inputs, options = [], []
  for _ in range(num_examples):
    inputs.append(list(rng.integers(2, vocab, rng.choice([2, 4]))) + [EOS])
    num_opts = int(rng.integers(1, 5))
    options.append(
      [list(rng.integers(2, vocab, rng.choice([1, 4]))) + [EOS] for _ in range(num_opts)]
    )
  return inputs, options


def test_batched_scores_match_brute_force(random_model):
  inputs, options = _random_problem(7)
  # batch_size 3 with 7 inputs: the last batch is padded; option counts differ per input.
  result = rank.rank_classify(random_model, inputs, options, batch_size=3)
  assert result.scores.shape == (7, max(len(o) for o in options))
  for i, (x, opts) in enumerate(zip(inputs, options, strict=True)):
    expected = [_brute_force_score(random_model.config, random_model.params, x, o) for o in opts]
    np.testing.assert_allclose(result.scores[i, : len(opts)], expected, rtol=1e-4, atol=1e-4)
    assert np.all(np.isneginf(result.scores[i, len(opts) :]))
    assert result.token_counts[i, : len(opts)].tolist() == [len(o) for o in opts]
    assert result.choices[i] == int(np.argmax(expected))


def test_length_normalisation_divides_by_option_tokens(random_model):
  inputs, options = _random_problem(4, seed=1)
  raw = rank.rank_classify(random_model, inputs, options, batch_size=4)
  normed = rank.rank_classify(random_model, inputs, options, batch_size=4, length_normalize=True)
  real = raw.token_counts > 0
  np.testing.assert_allclose(
    normed.scores[real], raw.scores[real] / raw.token_counts[real], rtol=1e-6
  )
  np.testing.assert_array_equal(normed.choices, np.argmax(normed.scores, axis=-1))


def test_logits_callable_path_matches_shared_encoder_path(random_model):
  config, params = random_model.config, random_model.params

  @jax.jit
  def logits_fn(input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
    del decoder_attention_mask
    return t5_lib.T5(config).apply(
      {"params": params}, input_ids, decoder_input_ids, encoder_mask=attention_mask
    )

  inputs, options = _random_problem(5, seed=2)
  shared = rank.rank_classify(random_model, inputs, options, batch_size=2)
  generic = rank.rank_classify(logits_fn, inputs, options, batch_size=2)
  np.testing.assert_allclose(generic.scores, shared.scores, rtol=1e-4, atol=1e-4)


def test_same_shapes_do_not_recompile(random_model):
  compiles = []

  def listener(event, duration_secs, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration_secs)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    inputs, options = _random_problem(6, seed=4)
    kwargs = dict(batch_size=2, num_options=4, input_length=16, target_length=8)
    rank.rank_classify(random_model, inputs, options, **kwargs)
    warm = len(compiles)
    other_inputs, other_options = _random_problem(9, seed=5)
    rank.rank_classify(random_model, other_inputs, other_options, **kwargs)
    assert len(compiles) == warm, "a second category with the same shapes recompiled"
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_fine_tuned_model_prefers_the_trained_option():
  # Toy task: an input starting with an even token id answers option 0 ("yes"), odd: option 1.
  config = _tiny_config()
  yes, no = [10, 11, EOS], [12, EOS]
  rng = np.random.default_rng(0)
  firsts = rng.integers(20, 60, 64)
  inputs = [[int(a), int(b), EOS] for a, b in zip(firsts, rng.integers(2, 60, 64), strict=True)]
  labels = [0 if a % 2 == 0 else 1 for a in firsts]
  targets = rank.pad_rows([yes if y == 0 else no for y in labels], 4)  # [n, 4]
  enc = rank.pad_rows(inputs, 4)  # [n, 4]
  module = t5_lib.T5(config)
  params = _init_params(config, jax.random.PRNGKey(0))
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state):
    def loss_fn(p):
      logits = module.apply({"params": p}, enc, rank.shift_right(jnp.asarray(targets)))
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [n, 4]
      weights = targets != 0
      return (loss * weights).sum() / weights.sum()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  model = T5Model(config, params)
  before = rank.rank_classify(model, inputs, [[yes, no]] * len(inputs), batch_size=16)
  for _ in range(300):
    params, opt_state, loss = train_step(params, opt_state)
  assert float(loss) < 0.05
  model = T5Model(config, params)
  result = rank.rank_classify(model, inputs, [[yes, no]] * len(inputs), batch_size=16)
  assert result.choices.tolist() == labels
  assert np.mean(before.choices == np.asarray(labels)) < 0.9  # the untrained model did not know
  for i in (0, 1, 2):
    expected = [_brute_force_score(config, params, inputs[i], o) for o in (yes, no)]
    np.testing.assert_allclose(result.scores[i], expected, rtol=1e-4, atol=1e-4)


def test_bad_input_is_rejected(random_model):
  with pytest.raises(ValueError, match="no options"):
    rank.rank_classify(random_model, [[5, EOS]], [[]])
  with pytest.raises(ValueError, match="2 inputs but 1 option lists"):
    rank.rank_classify(random_model, [[5, EOS], [6, EOS]], [[[7, EOS]]])
  with pytest.raises(ValueError, match="3 options > num_options=2"):
    rank.rank_classify(random_model, [[5, EOS]], [[[7], [8], [9]]], num_options=2)
  with pytest.raises(TypeError, match="needs a flanjax.model.hf.T5Model"):
    rank.rank_classify(object(), [[5, EOS]], [[[7, EOS]]])


def test_docstring_examples():
  assert rank.bucket_length(1) == 8 and rank.bucket_length(64) == 64
  assert rank.bucket_length(65) == 128
  result = doctest.testmod(rank)
  assert result.attempted >= 6 and result.failed == 0


def test_model_side_of_eval_imports_no_tensorflow():
  import subprocess
  import sys

  code = (
    "import sys; import flanjax.eval.rank, flanjax.eval.scoring, flanjax.eval.evaluate; "
    "print(sorted(m for m in ('tensorflow', 'seqio') if m in sys.modules))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr
