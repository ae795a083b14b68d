"""Fused attention for `T5Config.attention="flash"`, carrying T5's additive bias.

T5 attention is `softmax(q·kᵀ + bias)·v` with no 1/sqrt(d) scaling. `Bias` carries it in parts:
the relative position bias ([1, heads, q, k], one per stack: in a packed row key − query
positions equal index differences within a segment, so no per-row bias is needed), the padding /
packing / causal masks as -1e9 ([batch, 1, q, k]) for the XLA path, and the same masks as
segment ids ([batch, q], [batch, k]) for the kernel. No [batch, heads, q, k] bias outlives a
layer: that took FLAN-T5-small's train step (batch 64, 2048/512, no microbatches) from 35.75 GiB
to 5.42 GiB per v4 chip (`plan`). The fused paths match the XLA path at every real position;
rows of packing padding differ (nothing reads them):

  * TPU: the Pallas flash kernel (`jax.experimental.pallas.ops.tpu.flash_attention`) with
    `ab` = the position bias broadcast to the shard's [batch, heads, q, k] (the kernel has no
    broadcast dimension), `SegmentIds` for the masks, `sm_scale=1.0`, and `causal=True` for
    decoder self-attention (its blocks above the diagonal are skipped). Cross-attention has no
    `ab`.
  * CPU: the same kernel in Pallas interpret mode (`pltpu.force_tpu_interpret_mode(True)`, the
    HLO interpreter), so tests here run the real kernel code. The choice between the two is made
    at lowering time (`lax.platform_dependent`), so a TPU program compiled ahead of time on a CPU
    host (`plan`) gets the real kernel.
  * GPU: cuDNN fused attention (`jax.nn.dot_product_attention(..., bias=position + mask,
    implementation="cudnn")`) when compute is bfloat16 / float16 and the head size is a multiple
    of 8 up to 128 (cuDNN's limits); otherwise the plain softmax path. Untested here (no GPU).
  * Under a device mesh (`jax.set_mesh`), the kernel runs per shard in `jax.shard_map`, split
    over batch and heads as the active `nn.logical_axis_rules` say, since a Pallas call cannot
    be partitioned by XLA.

The kernel needs both sequence lengths to be multiples of 128 (its block sizes; the largest of
512 / 256 / 128 that divides a length is used) and a head size <= 128 or a multiple of 128.
Other shapes fall back to the XLA path with a warning naming them; single-token decoding steps
always use the XLA path. The kernels have no dropout on the attention weights: with
attention="flash" and dropout enabled, that one dropout is skipped (all others still apply).

Example:
  >>> out = flash_attention(query, key, value, bias, causal=False)  # [batch, heads, q, kv]
"""

from __future__ import annotations

import functools
import logging
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

BLOCK_SIZES = (512, 256, 128)  # tried in order; the first that divides a length is used
_LOGICAL = ("batch", "heads", "length", "kv")
_warned: set[str] = set()


def _block(length: int) -> int | None:
  return next((b for b in BLOCK_SIZES if length % b == 0), None)


def unsupported_reason(q_len: int, kv_len: int, head_dim: int) -> str | None:
  """Why the flash kernel cannot take these shapes, or None when it can.

  Example: unsupported_reason(100, 128, 64) → "query length 100 is not a multiple of 128".
  """
  for name, length in (("query", q_len), ("key", kv_len)):
    if _block(length) is None:
      return f"{name} length {length} is not a multiple of {BLOCK_SIZES[-1]}"
  if head_dim > 128 and head_dim % 128:
    return f"head size {head_dim} is above 128 and not a multiple of 128"
  return None


def warn_once(message: str) -> None:
  """Logs `message` as a warning the first time it comes up (a trace may see it per layer)."""
  if message not in _warned:
    _warned.add(message)
    logging.warning("%s", message)


def _block_sizes(q_len: int, kv_len: int) -> tpu_flash.BlockSizes:
  bq, bk = _block(q_len), _block(kv_len)
  return tpu_flash.BlockSizes(
    block_q=bq,
    block_k_major=bk,
    block_k=bk,
    block_b=1,
    block_q_major_dkv=bq,
    block_k_major_dkv=bk,
    block_k_dkv=bk,
    block_q_dkv=bq,
    block_k_major_dq=bk,
    block_k_dq=bk,
    block_q_dq=bq,
  )


class Bias(NamedTuple):
  """One attention's additive bias, as terms, and its masks again as segment ids.

  The XLA path adds `position` and `mask` to the scores. The flash kernel takes `position` as
  its `ab` and the masks as `SegmentIds` (`q_segments` / `kv_segments`: a query attends to a key
  only when their ids are equal) plus its `causal` flag, so it never needs a [b, h, q, k] mask.
  The two agree at every real (non-padding) query position; padding rows differ (both are
  ignored downstream).
  """

  position: jax.Array | None  # float32 [1|b, h, q, k]; None: no position bias (cross-attention)
  mask: jax.Array  # float32 [b|1, 1, q, k]: 0 where attention is allowed, -1e9 elsewhere
  q_segments: jax.Array | None = None  # int32 [b, q]; None only for single-token decoding steps
  kv_segments: jax.Array | None = None  # int32 [b, k]

  def terms(self) -> tuple[jax.Array, ...]:
    return tuple(t for t in (self.position, self.mask) if t is not None)

  def add_to(self, scores: jax.Array) -> jax.Array:
    return sum(self.terms(), scores)


def reference_attention(query, key, value, bias: Bias):
  """softmax(q·kᵀ + bias)·v in float32 softmax: the XLA path without dropout."""
  scores = jnp.einsum(
    "bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32
  )  # [batch, heads, q, k]
  weights = jax.nn.softmax(bias.add_to(scores), axis=-1).astype(value.dtype)
  return jnp.einsum("bhqk,bhkd->bhqd", weights, value)  # [batch, heads, q, kv]


def _tpu_kernel(query, key, value, ab, q_segments, kv_segments, *, causal: bool):
  if ab is not None:
    ab = jnp.broadcast_to(ab, query.shape[:3] + key.shape[2:3])  # [batch, heads, q, k]
  return tpu_flash.flash_attention(
    query,
    key,
    value,
    ab,
    tpu_flash.SegmentIds(q_segments, kv_segments),
    causal=causal,
    sm_scale=1.0,
    block_sizes=_block_sizes(query.shape[2], key.shape[2]),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _interpreted_kernel(query, key, value, ab, q_segments, kv_segments, causal):
  """The TPU kernel in Pallas interpret mode. The interpret switch must be on while each
  `pallas_call` is traced, the backward ones included, hence this custom_vjp."""
  with pltpu.force_tpu_interpret_mode(True):
    return _tpu_kernel(query, key, value, ab, q_segments, kv_segments, causal=causal)


def _interpreted_fwd(query, key, value, ab, q_segments, kv_segments, causal):
  with pltpu.force_tpu_interpret_mode(True):
    kernel = lambda q, k, v, ab: _tpu_kernel(q, k, v, ab, q_segments, kv_segments, causal=causal)
    return jax.vjp(kernel, query, key, value, ab)  # the vjp function is a pytree of residuals


def _interpreted_bwd(causal, vjp_fn, grad):
  del causal
  with pltpu.force_tpu_interpret_mode(True):
    return (*vjp_fn(grad), None, None)  # segment ids: integers, no cotangent


_interpreted_kernel.defvjp(_interpreted_fwd, _interpreted_bwd)


def _gpu_attention(query, key, value, bias: Bias):
  head_dim = query.shape[-1]
  if query.dtype not in (jnp.bfloat16, jnp.float16) or head_dim % 8 or head_dim > 128:
    return reference_attention(query, key, value, bias)
  to_btnh = lambda x: x.transpose(0, 2, 1, 3)  # [batch, heads, len, kv] → [batch, len, heads, kv]
  total = bias.add_to(jnp.zeros((), jnp.float32))  # position + mask, broadcast below
  out = jax.nn.dot_product_attention(
    to_btnh(query),
    to_btnh(key),
    to_btnh(value),
    bias=jnp.broadcast_to(total, query.shape[:3] + key.shape[2:3]).astype(query.dtype),
    scale=1.0,
    implementation="cudnn",
  )  # [batch, q, heads, kv]
  return out.transpose(0, 2, 1, 3)  # [batch, heads, q, kv]


def _local_attention(query, key, value, bias: Bias, *, causal: bool):
  if jax.default_backend() == "gpu":
    return _gpu_attention(query, key, value, bias)
  kernel_args = lambda b: (b.position, b.q_segments, b.kv_segments)
  return jax.lax.platform_dependent(
    query,
    key,
    value,
    bias,
    cpu=lambda q, k, v, b: _interpreted_kernel(q, k, v, *kernel_args(b), causal),
    tpu=lambda q, k, v, b: _tpu_kernel(q, k, v, *kernel_args(b), causal=causal),
    default=reference_attention,
  )


def _fit(spec: jax.sharding.PartitionSpec, shape, mesh) -> jax.sharding.PartitionSpec:
  """Keeps, per dimension, the leading mesh axes whose product divides it."""
  fitted = []
  for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
    kept = []
    for axis in (entry,) if isinstance(entry, str) else tuple(entry or ()):
      if dim % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]) == 0:
        kept.append(axis)
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return jax.sharding.PartitionSpec(*fitted)


def flash_attention(query, key, value, bias: Bias, *, causal: bool = False):
  """query [b, h, q, d], key / value [b, h, k, d], `Bias` → [b, h, q, d].

  Shapes must pass `unsupported_reason`. `causal` is the kernel's causal mask (decoder
  self-attention); `bias.mask` must hold it too, for the XLA fallback.
  """
  if bias.q_segments is None or bias.kv_segments is None:
    raise ValueError("flash_attention needs Bias.q_segments and .kv_segments (the masks)")
  batch, heads = query.shape[:2]
  run = functools.partial(_local_attention, causal=causal)
  mesh = jax.sharding.get_abstract_mesh()
  spec = nn.logical_to_mesh_axes(_LOGICAL)
  if mesh.empty or mesh.size == 1 or spec is None or all(s is None for s in spec):
    return run(query, key, value, bias)
  spec = _fit(jax.sharding.PartitionSpec(spec[0], spec[1]), (batch, heads), mesh)
  P = jax.sharding.PartitionSpec

  # A bias term's batch / heads dimension of 1 is broadcast: that dimension is not split.
  def split(term):  # [b|1, h|1, ...]: the spec of its first two dimensions
    if term is None:
      return None
    return P(*(s if n > 1 else None for s, n in zip(spec, term.shape[:2], strict=True)))

  bias_spec = Bias(split(bias.position), split(bias.mask), P(spec[0], None), P(spec[0], None))
  return jax.shard_map(
    run, in_specs=(spec, spec, spec, bias_spec), out_specs=spec, check_vma=False
  )(query, key, value, bias)
