"""Rank classification (FLAN's protocol for tasks with OPTIONS): score every option, pick the best.

For each input the log-likelihood of every option (its target tokens, EOS included) is computed by
teacher forcing; the option with the highest score is the prediction. Scores may be divided by
the number of option tokens (`length_normalize=True`).

Batches have fixed shapes, so a task compiles once: `batch_size` inputs × `num_options` options,
inputs padded to one length bucket per call and options to another; the last batch is padded with
empty rows. With a `T5Model` the encoder runs once per input and
its output is shared by that input's options, all in one jitted forward pass per batch. A plain
callable with `T5Model.logits`'s signature also works (one call per batch, encoder per option).

No TensorFlow or seqio here: this runs on a GPU image without them.

Example:
  >>> from flanjax.model.hf import T5Model
  >>> from flanjax.model.config import T5Config
  >>> model = T5Model.init(T5Config.tiny(vocab_size=64, d_model=32, d_ff=64, num_layers=1))
  >>> result = rank_classify(model, inputs=[[5, 6, 1]], options=[[[7, 1], [8, 9, 1]]])
  >>> result.scores.shape, result.token_counts.tolist(), int(result.choices[0]) in (0, 1)
  ((1, 2), [[2, 3]], True)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from flanjax import partitioning
from flanjax.model import decode
from flanjax.model.hf import T5Model

TokenIds = Sequence[int]


@dataclasses.dataclass(frozen=True)
class RankResult:
  """scores: [num_inputs, max_options] float (-inf where an input has fewer options);
  token_counts: [num_inputs, max_options] option lengths in tokens (0 where absent);
  choices: [num_inputs] index of the best option."""

  scores: np.ndarray
  token_counts: np.ndarray
  choices: np.ndarray


def bucket_length(length: int, max_length: int | None = None, min_length: int = 8) -> int:
  """`decode.bucket` (the one power-of-two rule) capped at `max_length`.

  Padding to a few bucket sizes keeps jit from compiling once per distinct batch shape.

  Example:
    >>> bucket_length(3), bucket_length(17), bucket_length(300, max_length=256)
    (8, 32, 256)
  """
  size = decode.bucket(length, min_length)
  return min(size, max_length) if max_length else size


def pad_rows(rows: Sequence[TokenIds], length: int, num_rows: int | None = None) -> np.ndarray:
  """Token lists → int32 [num_rows, length], truncated to `length`, 0-padded (0 = padding id).

  Example:
    >>> pad_rows([[5, 6, 1], [7]], length=4, num_rows=3).tolist()
    [[5, 6, 1, 0], [7, 0, 0, 0], [0, 0, 0, 0]]
  """
  num_rows = len(rows) if num_rows is None else num_rows
  out = np.zeros((num_rows, length), np.int32)  # [rows, length]
  for i, row in enumerate(rows):
    row = list(row)[:length]
    out[i, : len(row)] = row
  return out


def shift_right(targets: jax.Array, start_token: int = 0) -> jax.Array:
  """[b, t] targets → [b, t] decoder inputs: start token, then targets[:, :-1]."""
  start = jnp.full(targets.shape[:-1] + (1,), start_token, targets.dtype)
  return jnp.concatenate([start, targets[..., :-1]], axis=-1)


def _sum_token_log_probs(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """logits [r, t, vocab], targets [r, t] (0 = padding) → (sum of log p [r], token count [r])."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [r, t, vocab]
  token_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [r, t]
  weights = (targets != 0).astype(jnp.float32)  # [r, t]
  return (token_log_probs * weights).sum(-1), weights.sum(-1)


@functools.lru_cache(maxsize=16)
def _shared_encoder_scorer(config) -> Callable:
  """Jitted (params, inputs [b, li], targets [b, k, lt]) → (log-likelihood, counts) [b, k]."""
  from flanjax.model import t5 as t5_lib

  module = t5_lib.T5(config)

  def forward(mdl, input_tokens, option_targets):
    batch, num_options, target_len = option_targets.shape
    key_mask = mdl.encoder_key_mask(input_tokens)  # [b, li]
    encoded = mdl.encode(input_tokens)  # [b, li, d]
    # Each input's encoding serves all of its options.
    encoded_rows = jnp.repeat(encoded, num_options, axis=0)  # [b*k, li, d]
    key_mask_rows = jnp.repeat(key_mask, num_options, axis=0)  # [b*k, li]
    flat_targets = option_targets.reshape(batch * num_options, target_len)  # [b*k, lt]
    decoder_inputs = shift_right(flat_targets, config.decoder_start_token_id)
    logits = mdl.decode(encoded_rows, key_mask_rows, decoder_inputs)  # [b*k, lt, vocab]
    total, count = _sum_token_log_probs(logits, flat_targets)
    return total.reshape(batch, num_options), count.reshape(batch, num_options)  # [b, k]

  @jax.jit
  def score(params, input_tokens, option_targets):
    # The logical axis rules let sharded kernels (flash attention) split over the mesh.
    with nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
      return module.apply({"params": params}, input_tokens, option_targets, method=forward)

  return score


def _logits_fn_scorer(logits_fn: Callable) -> Callable:
  """Scorer from a `T5Model.logits`-like callable; every option row repeats its input."""

  def score(params, input_tokens, option_targets):
    del params
    batch, num_options, target_len = option_targets.shape
    input_rows = np.repeat(np.asarray(input_tokens), num_options, axis=0)  # [b*k, li]
    flat_targets = jnp.asarray(option_targets).reshape(batch * num_options, target_len)
    logits = logits_fn(
      input_rows,
      np.asarray(shift_right(flat_targets)),
      attention_mask=(input_rows != 0).astype(np.int32),
    )  # [b*k, lt, vocab]
    total, count = _sum_token_log_probs(jnp.asarray(logits), flat_targets)
    return total.reshape(batch, num_options), count.reshape(batch, num_options)  # [b, k]

  return score


def make_option_scorer(model_or_logits_fn: Any) -> tuple[Callable, Any]:
  """(score(params, inputs, option_targets), params) for a `T5Model` or a logits callable.

  A `T5Model` is scored with its encoder run once per input; a plain callable is used as
  `logits(input_ids, decoder_input_ids, attention_mask=...)` (e.g. a reference implementation).
  """
  if isinstance(model_or_logits_fn, T5Model):
    return _shared_encoder_scorer(model_or_logits_fn.config), model_or_logits_fn.params
  if callable(model_or_logits_fn):
    return _logits_fn_scorer(model_or_logits_fn), None
  raise TypeError(
    "rank_classify needs a flanjax.model.hf.T5Model or a logits callable "
    f"(input_ids, decoder_input_ids, attention_mask=...) -> logits; got "
    f"{type(model_or_logits_fn).__name__}"
  )


def rank_classify(
  model_or_logits_fn: Any,
  inputs: Sequence[TokenIds],
  options: Sequence[Sequence[TokenIds]],
  *,
  batch_size: int = 16,
  max_input_length: int | None = None,
  max_target_length: int | None = None,
  length_normalize: bool = False,
  num_options: int | None = None,
  input_length: int | None = None,
  target_length: int | None = None,
  mesh: Mesh | None = None,
) -> RankResult:
  """Scores every option of every input; picks the highest-scoring option.

  Args:
    model_or_logits_fn: a `T5Model` (or anything with `.config` and `.params`), an object with
      `.logits(...)`, or a callable with `T5Model.logits`'s signature.
    inputs: token ids per example (EOS included, as the data pipeline makes them).
    options: per example, the token ids of each option (EOS included).
    batch_size: inputs per forward pass; each pass scores batch_size × num_options rows.
    max_input_length / max_target_length: truncation lengths (and caps on the length buckets).
    length_normalize: divide each option's log-likelihood by its number of tokens.
    num_options: option slots per input (default: the most any input has); fixing it keeps the
      batch shape the same across tasks.
    input_length / target_length: exact padded lengths (default: a power-of-two bucket of this
      call's longest input / option); callers scoring several calls with one shape set them.
    mesh: the device mesh a `T5Model` scores on (default: its own `mesh`). Each batch is then a
      global array with rows over data x fsdp (`batch_size` rounded up to a multiple of the
      batch shards), so every device scores its share; every process passes the same inputs.

  Returns:
    RankResult with scores [n, num_options], token_counts and choices [n].
  """
  if len(inputs) != len(options):
    raise ValueError(f"rank_classify: {len(inputs)} inputs but {len(options)} option lists")
  if not len(inputs):
    raise ValueError("rank_classify: no examples to score")
  empty = [i for i, opts in enumerate(options) if not len(opts)]
  if empty:
    raise ValueError(f"rank_classify: examples {empty[:5]} have no options")
  most = max(len(opts) for opts in options)
  num_options = num_options or most
  if most > num_options:
    raise ValueError(f"rank_classify: an example has {most} options > num_options={num_options}")
  # One bucket per call: every batch of this call has the same shape.
  input_len = input_length or bucket_length(max(len(x) for x in inputs), max_input_length)
  target_len = target_length or bucket_length(
    max(len(o) for opts in options for o in opts), max_target_length
  )
  score_fn, params = make_option_scorer(model_or_logits_fn)
  if not isinstance(model_or_logits_fn, T5Model):
    if mesh is not None:
      raise ValueError("rank_classify: mesh= needs a T5Model (a logits callable runs as it is)")
  elif mesh is None:
    mesh = model_or_logits_fn.mesh
  batch_size = partitioning.padded_rows(batch_size, mesh)

  totals = np.full((len(inputs), num_options), -np.inf, np.float32)
  counts = np.zeros((len(inputs), num_options), np.int32)
  for start in range(0, len(inputs), batch_size):
    batch_inputs = inputs[start : start + batch_size]
    batch_options = options[start : start + batch_size]
    input_tokens = pad_rows(batch_inputs, input_len, batch_size)  # [b, li]
    option_targets = np.zeros((batch_size, num_options, target_len), np.int32)  # [b, k, lt]
    for i, opts in enumerate(batch_options):
      option_targets[i, : len(opts)] = pad_rows(opts, target_len)
    with partitioning.active(mesh):
      scored = score_fn(
        params,
        partitioning.place_batch(input_tokens, mesh),
        partitioning.place_batch(option_targets, mesh),
      )
      total, count = (partitioning.to_host(x) for x in scored)
    n = len(batch_inputs)
    real = option_targets[:n, :, 0] != 0  # [n, k] slots holding an option
    totals[start : start + n] = np.where(real, total[:n], -np.inf)
    counts[start : start + n] = np.where(real, count[:n], 0)

  scores = totals
  if length_normalize:
    scores = np.where(counts > 0, totals / np.maximum(counts, 1), -np.inf).astype(np.float32)
  return RankResult(scores=scores, token_counts=counts, choices=np.argmax(scores, axis=-1))
