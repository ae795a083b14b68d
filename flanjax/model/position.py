"""T5's relative position bias: log-spaced buckets of `key_position - query_position`, one learned
scalar per (bucket, head), shared by all layers of a stack.

Example:
  >>> relative_position_bucket(jnp.array([-1, 0, 1, 200]), bidirectional=True, num_buckets=32,
  ...                          max_distance=128)
  Array([ 1,  0, 17, 31], dtype=int32)
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from flanjax.model.config import T5Config


def relative_position_bucket(
  relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
  """T5's log-spaced buckets for `memory_position - query_position` (same as HF / Mesh TF).

  Example (bidirectional, 32 buckets, max distance 128): -1 → 1, 0 → 0, 1 → 17, 200 → 31.
  """
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # Same float32 arithmetic as the reference; max(…, 1) only avoids log(0) in the unused branch.
  scaled = (
    jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
    / math.log(max_distance / max_exact)
    * (num_buckets - max_exact)
  )
  large = jnp.minimum(max_exact + scaled.astype(relative_position.dtype), num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
  """Per-head additive bias from bucketed relative positions."""

  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """[b, q] and [b, k] int positions → float32 bias [b, heads, q, k]."""
    cfg = self.config
    table = self.param(
      "rel_embedding",
      nn.with_logical_partitioning(
        nn.initializers.normal(stddev=cfg.d_model**-0.5), ("relpos_buckets", "heads")
      ),
      (cfg.relative_attention_num_buckets, cfg.num_heads),
      jnp.dtype(cfg.param_dtype),
    )
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # [b, q, k]
    buckets = relative_position_bucket(
      relative,
      bidirectional=self.bidirectional,
      num_buckets=cfg.relative_attention_num_buckets,
      max_distance=cfg.relative_attention_max_distance,
    )
    bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [b, q, k, heads]
    return jnp.transpose(bias, (0, 3, 1, 2))  # [b, heads, q, k]
