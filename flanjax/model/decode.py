"""Cached decoding for the Flax T5: greedy, temperature / top-k sampling, and beam search.

Each decoding call is one jitted program: the encoder runs once, the cross-attention keys/values
are computed once, and a `lax.while_loop` runs one decoder position at a time against a key/value
cache, stopping early once every row has produced EOS (or, for beam search, once no running beam
can beat the finished ones). Batch size, input length and the cache length are padded to fixed
buckets, so a new batch of a similar size reuses the compiled program instead of recompiling.

A scanned model (`T5Config.scan_layers`) decodes layer by layer too: its stacked parameters are
sliced back to per-layer ones inside the jitted program (`t5.unstack_layers`). The encoder may
use attention="flash"; the single-token decoder steps always use the XLA path.

Beam search reproduces Hugging Face's `generate(num_beams=k, do_sample=False)` (its defaults:
length_penalty=1.0, early_stopping=False): 2k candidates per step, finished hypotheses scored
`sum_logprobs / generated_len**length_penalty`, HF's "can a running beam still win" stop rule.

Example:
  >>> tokens = generate(cfg, params, input_ids, max_new_tokens=16)  # [batch, <=16], 0 after EOS
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from flanjax import partitioning
from flanjax.model import t5
from flanjax.model.config import T5Config

_NEG = -1.0e9


def bucket(n: int, minimum: int = 8) -> int:
  """Smallest power of two >= max(n, minimum): 5 → 8, 9 → 16, 200 → 256."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def batch_rows(batch: int, mesh: Mesh | None = None) -> int:
  """The rows `generate` decodes for `batch` inputs: a power of two (`bucket`), then a multiple
  of the mesh's batch shards.

  Example:
    >>> batch_rows(5), batch_rows(1)
    (8, 1)
  """
  return partitioning.padded_rows(bucket(batch, 1), mesh)


def _gather_beams(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [b, n, ...], index [b, m] → [b, m, ...]."""
  return jax.vmap(lambda xb, ib: xb[ib])(x, index)


def _first_eos_trim(tokens: jax.Array, eos_id: int, pad_id: int) -> jax.Array:
  """Pads every position after the first EOS of a row: [5, 1, 7, 1] → [5, 1, 0, 0] (eos=1)."""
  is_eos = tokens == eos_id
  after = jnp.cumsum(is_eos, axis=1) - is_eos > 0
  return jnp.where(after, pad_id, tokens)


@functools.partial(
  jax.jit, static_argnames=("config", "cache_len", "num_beams", "do_sample", "top_k")
)
def _decode(
  params,
  input_ids,
  attention_mask,
  max_new_tokens,
  temperature,
  length_penalty,
  rng,
  *,
  config: T5Config,
  cache_len: int,
  num_beams: int,
  do_sample: bool,
  top_k: int,
):
  if config.scan_layers:
    # Cached decoding runs one layer at a time: slice the stacked parameters (inside this jit).
    params = t5.unstack_layers(params, config)
  config = config.replace(scan_layers=False, remat="none")  # remat is moot without gradients
  model = t5.T5(config)
  variables = {"params": params}
  key_mask = attention_mask.astype(bool)
  encoded = model.apply(variables, input_ids, attention_mask, method=t5.T5.encode)
  if num_beams > 1:
    # [b, l, ...] → [b * k, l, ...]: every beam has its own copy of its row's encoder output.
    encoded = jnp.repeat(encoded, num_beams, axis=0)
    key_mask = jnp.repeat(key_mask, num_beams, axis=0)
  cross_kv = model.apply(variables, encoded, method=t5.T5.cross_kv)
  cache = t5.init_cache(config, encoded.shape[0], cache_len)

  def step_fn(tokens, index, cache):
    return model.apply(
      variables, tokens, index, cache, cross_kv, key_mask, method=t5.T5.decoder_step
    )

  if num_beams > 1:
    return _beam_search(
      step_fn,
      cache,
      input_ids.shape[0],
      num_beams,
      cache_len,
      max_new_tokens,
      length_penalty,
      config,
    )
  return _sample(
    step_fn,
    cache,
    input_ids.shape[0],
    cache_len,
    max_new_tokens,
    temperature,
    rng,
    config,
    do_sample,
    top_k,
  )


def _sample(
  step_fn, cache, batch, cache_len, max_new_tokens, temperature, rng, config, do_sample, top_k
):
  eos, pad = config.eos_token_id, config.pad_token_id

  def cond(state):
    index, _, _, finished, _ = state
    return (index < max_new_tokens) & ~jnp.all(finished)

  def body(state):
    index, prev, out, finished, cache = state
    logits, cache = step_fn(prev, index, cache)  # [b, vocab]
    if do_sample:
      logits = logits / temperature
      if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, _NEG, logits)
      token = jax.random.categorical(jax.random.fold_in(rng, index), logits, axis=-1)
    else:
      token = jnp.argmax(logits, axis=-1)
    token = jnp.where(finished, pad, token).astype(jnp.int32)
    out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], index, 1)
    return index + 1, token, out, finished | (token == eos), cache

  start = jnp.full((batch,), config.decoder_start_token_id, jnp.int32)
  out = jnp.full((batch, cache_len), pad, jnp.int32)
  state = (jnp.int32(0), start, out, jnp.zeros((batch,), bool), cache)
  return jax.lax.while_loop(cond, body, state)[2]


def _beam_search(step_fn, cache, batch, k, cache_len, max_new_tokens, length_penalty, config):
  eos, pad = config.eos_token_id, config.pad_token_id
  two_k = 2 * k
  top_k_mask = jnp.arange(two_k) < k  # only the best k candidates may finish (as HF)

  def cond(state):
    index, _, _, _, _, _, unsatisfied, all_hit, _ = state
    return (index < max_new_tokens) & jnp.any(unsatisfied) & ~all_hit

  def body(state):
    (index, run_seqs, run_scores, fin_seqs, fin_scores, fin_flags, unsatisfied, _, cache) = state
    prev = jnp.where(
      index == 0, config.decoder_start_token_id, run_seqs[:, :, jnp.maximum(index - 1, 0)]
    )  # [b, k]
    logits, cache = step_fn(prev.reshape(batch * k), index, cache)  # [b * k, vocab]
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, vocab)
    logp = (logp + run_scores[:, :, None]).reshape(batch, k * vocab)
    cand_scores, cand_index = jax.lax.top_k(logp, two_k)  # [b, 2k]
    cand_beam, cand_token = cand_index // vocab, (cand_index % vocab).astype(jnp.int32)
    cand_seqs = _gather_beams(run_seqs, cand_beam)  # [b, 2k, T]
    cand_seqs = cand_seqs.at[:, :, index].set(cand_token)
    hits = (cand_token == eos) | (index + 1 >= max_new_tokens)  # [b, 2k]

    # Running beams: the best k candidates that did not stop.
    cont_scores = cand_scores + hits.astype(jnp.float32) * _NEG
    _, next_index = jax.lax.top_k(cont_scores, k)  # [b, k]
    run_seqs = _gather_beams(cand_seqs, next_index)
    run_scores = _gather_beams(cont_scores, next_index)
    parent = _gather_beams(cand_beam, next_index)  # [b, k]

    # Finished hypotheses: merge the candidates that just stopped, keep the best k.
    just_finished = hits & top_k_mask[None]
    new_scores = cand_scores / ((index + 1).astype(jnp.float32) ** length_penalty)
    new_scores = new_scores + (~unsatisfied[:, None]).astype(jnp.float32) * _NEG
    new_scores = new_scores + (~just_finished).astype(jnp.float32) * _NEG
    merged_scores = jnp.concatenate([fin_scores, new_scores], axis=1)  # [b, 3k]
    merged_seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)
    merged_flags = jnp.concatenate([fin_flags, just_finished], axis=1)
    fin_scores, keep = jax.lax.top_k(merged_scores, k)
    fin_seqs = _gather_beams(merged_seqs, keep)
    fin_flags = _gather_beams(merged_flags, keep)

    # HF's early-stop heuristic (early_stopping=False): stop once the best running beam, scored at
    # the current length, cannot beat the worst finished hypothesis.
    best_running = run_scores[:, :1] / ((index + 1).astype(jnp.float32) ** length_penalty)
    worst_finished = jnp.where(fin_flags, jnp.min(fin_scores, axis=1, keepdims=True), _NEG)
    unsatisfied = unsatisfied & jnp.any(best_running > worst_finished, axis=-1)

    # Each row's beams take their parents' caches, gathered within the row ([b, k, ...]), so
    # rows sharded over the mesh's batch axes never move between devices.
    cache = jax.tree_util.tree_map(
      lambda c: _gather_beams(c.reshape((batch, k) + c.shape[1:]), parent).reshape(c.shape),
      cache,
    )
    return (
      index + 1,
      run_seqs,
      run_scores,
      fin_seqs,
      fin_scores,
      fin_flags,
      unsatisfied,
      jnp.all(hits),
      cache,
    )

  run_scores = jnp.where(jnp.arange(k) == 0, 0.0, _NEG)[None].repeat(batch, 0)
  seqs = jnp.full((batch, k, cache_len), pad, jnp.int32)
  state = (
    jnp.int32(0),
    seqs,
    run_scores,
    seqs,
    jnp.full((batch, k), _NEG),
    jnp.zeros((batch, k), bool),
    jnp.ones((batch,), bool),
    jnp.bool_(False),
    cache,
  )
  state = jax.lax.while_loop(cond, body, state)
  return state[3][:, 0]  # best finished hypothesis per row, [b, T]


def generate(
  config: T5Config,
  params,
  input_ids,
  attention_mask=None,
  *,
  max_new_tokens: int = 64,
  num_beams: int = 1,
  do_sample: bool = False,
  temperature: float = 1.0,
  top_k: int = 0,
  seed: int = 0,
  length_penalty: float = 1.0,
  mesh: Mesh | None = None,
) -> np.ndarray:
  """Generated ids [batch, <= max_new_tokens] (no start token; pad after EOS), as numpy.

  Shapes are bucketed (batch and input length to powers of two, the cache to a power of two
  >= max_new_tokens) so that calls with similar shapes share one compiled program.

  With a device `mesh` (parameters placed on it, `T5Model.on_mesh`), the batch is a global array
  with rows over data x fsdp (padded to `batch_rows`): each device decodes its share. Every
  process passes the same whole batch and gets the whole result.
  """
  input_ids = np.asarray(input_ids, np.int32)
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
  if attention_mask is None:
    attention_mask = (input_ids != config.pad_token_id).astype(np.int32)
  attention_mask = np.asarray(attention_mask, np.int32)
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if num_beams > 1 and do_sample:
    raise ValueError(
      "beam search with sampling is not supported: use num_beams=1 or do_sample=False"
    )
  batch, length = input_ids.shape
  padded_batch, padded_len = batch_rows(batch, mesh), bucket(length, 16)
  ids = np.zeros((padded_batch, padded_len), np.int32)
  mask = np.zeros((padded_batch, padded_len), np.int32)
  ids[:batch, :length], mask[:batch, :length] = input_ids, attention_mask
  mask[batch:, 0] = 1  # padding rows attend to one (pad) token, so they stay finite
  with partitioning.active(mesh):
    out = _decode(
      params,
      partitioning.place_batch(ids, mesh),
      partitioning.place_batch(mask, mesh),
      jnp.int32(max_new_tokens),
      jnp.float32(temperature),
      jnp.float32(length_penalty),
      jax.random.PRNGKey(seed),
      config=config,
      cache_len=bucket(max_new_tokens),
      num_beams=int(num_beams),
      do_sample=bool(do_sample),
      top_k=int(top_k),
    )
    out = partitioning.to_host(out)
  out = np.asarray(_first_eos_trim(out, config.eos_token_id, config.pad_token_id))
  out = out[:batch, :max_new_tokens]
  # Trim to the longest generated row (as HF does): a row's length runs through its first EOS,
  # or is max_new_tokens when it never produced one.
  has_eos = (out == config.eos_token_id).any(axis=1)
  lengths = np.where(has_eos, np.argmax(out == config.eos_token_id, axis=1) + 1, out.shape[1])
  return out[:, : max(1, int(lengths.max(initial=1)))]
