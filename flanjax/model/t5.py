"""A Flax Linen T5 encoder-decoder (v1.0 and v1.1 / FLAN-T5) with logical axis names.

Every parameter is created with `nn.with_logical_partitioning` and the main activations are
constrained with `nn.with_logical_constraint`, using the logical names of STYLE.md (batch, length,
embed, mlp, heads, kv, vocab, relpos_buckets); only `flanjax/partitioning.py` maps them to mesh
axes. Outside a `nn.logical_axis_rules` context the constraints are no-ops, so the model also runs
plainly on one device.

Parameter names follow t5x (token_embedder, encoder/layers_0/attention/q, ...); `hf.py` is the
rename table to Hugging Face names. Numerics follow HF `T5ForConditionalGeneration`: RMS layer norm
in float32, no 1/sqrt(d_kv) score scaling (it is folded into the query init), softmax in float32,
relative position buckets shared by all layers of a stack, tied embeddings rescaled by
d_model**-0.5.

Execution options of `T5Config` leave the function unchanged: `remat` and `scan_layers` (layer
stacks, see `scan.py`; scanned parameters are stacked on a leading "layers" axis) and
`attention="flash"` (fused kernels, see `attention.py`). The defaults run the plain path below.

Why Linen rather than NNX: parameters stay a plain pytree, which is what `jax.jit` shardings, optax,
Orbax and the HF rename table all want; NNX would add split/merge of mutable objects to every step
for nothing we need here.

Example:
  >>> cfg = T5Config.tiny()
  >>> params = init_params(cfg, jax.random.PRNGKey(0))
  >>> logits = T5(cfg).apply({"params": params}, enc_tokens, dec_tokens)  # [batch, tgt, vocab]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flanjax.model import attention, scan
from flanjax.model.config import T5Config
from flanjax.model.position import RelativePositionBias
from flanjax.model.position import relative_position_bucket as relative_position_bucket
from flanjax.model.scan import stack_layers
from flanjax.model.scan import unstack_layers as unstack_layers

_MASK_VALUE = -1e9  # finite, so a fully masked (padding) row gives a uniform softmax, never NaN.


def _param(
  module: nn.Module, name: str, shape: Sequence[int], axes: tuple[str, ...], std: float, dtype
) -> jax.Array:
  init = nn.initializers.normal(stddev=std) if std else nn.initializers.ones
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), dtype)


def dense(x: jax.Array, kernel: jax.Array, contract: int = 1, out_dtype=None) -> jax.Array:
  """Contracts the last `contract` axes of x with the first ones of kernel, as one 2-D matmul.

  x [b, l, d] · kernel [d, h, k] → [b, l, h, k]. Flattening to [b*l, d] @ [d, h*k] matters on
  XLA:CPU: the weight gradient of a 3-D dot contracts over two axes and ran ~1.8× slower.
  """
  lead, inner = x.shape[: x.ndim - contract], x.shape[x.ndim - contract :]
  size = math.prod(inner)
  y = jnp.matmul(
    x.reshape(-1, size), kernel.reshape(size, -1), preferred_element_type=out_dtype
  )  # [b*l, out]
  return y.reshape(*lead, *kernel.shape[contract:])


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction, computed in float32."""

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    scale = _param(self, "scale", (x.shape[-1],), ("embed",), 0.0, jnp.dtype(cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(variance + cfg.layer_norm_epsilon)
    return (y * scale.astype(jnp.float32)).astype(jnp.dtype(cfg.dtype))


class Attention(nn.Module):
  """Multi-head attention without score scaling; kernels [embed, heads, kv] / [heads, kv, embed].

  `causal` (decoder self-attention) only lets the flash kernel skip blocks above the diagonal:
  the mask itself is always in `bias` (`attention.Bias`).
  """

  config: T5Config
  causal: bool = False

  def setup(self):
    cfg = self.config
    d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
    pdt = jnp.dtype(cfg.param_dtype)
    self.q = _param(self, "q", (d, h, k), ("embed", "heads", "kv"), (d * k) ** -0.5, pdt)
    self.k = _param(self, "k", (d, h, k), ("embed", "heads", "kv"), d**-0.5, pdt)
    self.v = _param(self, "v", (d, h, k), ("embed", "heads", "kv"), d**-0.5, pdt)
    self.o = _param(self, "o", (h, k, d), ("heads", "kv", "embed"), (h * k) ** -0.5, pdt)
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [b, l, d] → key, value [b, h, l, kv] (heads first: the layout the matmuls want)."""
    dt = jnp.dtype(self.config.dtype)
    axes = ("batch", "heads", "length", "kv")
    key = dense(x, self.k.astype(dt)).transpose(0, 2, 1, 3)  # [batch, heads, length, kv]
    value = dense(x, self.v.astype(dt)).transpose(0, 2, 1, 3)  # [batch, heads, length, kv]
    return nn.with_logical_constraint(key, axes), nn.with_logical_constraint(value, axes)

  def attend(
    self,
    x_q: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: attention.Bias,
    deterministic: bool,
    fused: bool = True,
  ) -> jax.Array:
    """x_q [b, q, d]; key/value [b, h, k, kv]; `attention.Bias` → [b, q, d].

    The bias terms (position bias [1, h, q, k], mask [b, 1, q, k]) are added to the scores
    where they are used, so no [b, h, q, k] bias is kept between layers.

    Heads stay in front of the length axes: XLA:CPU runs 'bhqk,bhkd' about 4× faster than the
    same contraction on a [b, k, h, d] operand, and cached keys/values need no transpose.
    `fused=False` (single-token decoding steps) keeps the XLA path under attention="flash".
    """
    cfg = self.config
    dt = jnp.dtype(cfg.dtype)
    query = dense(x_q, self.q.astype(dt)).transpose(0, 2, 1, 3)  # [batch, heads, q, kv]
    query = nn.with_logical_constraint(query, ("batch", "heads", "length", "kv"))
    if fused and cfg.attention == "flash" and self._flash_fits(query, key, deterministic):
      out = attention.flash_attention(query, key, value, bias, causal=self.causal)
    else:
      scores = jnp.einsum(
        "bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32
      )  # [batch, heads, q, k]
      weights = jax.nn.softmax(bias.add_to(scores), axis=-1)
      weights = self.dropout(weights, deterministic=deterministic).astype(dt)
      out = jnp.einsum("bhqk,bhkd->bhqd", weights, value)  # [batch, heads, q, kv]
    out = dense(out.transpose(0, 2, 1, 3), self.o.astype(dt), contract=2)  # [batch, q, embed]
    return nn.with_logical_constraint(out, ("batch", "length", "embed"))

  def _flash_fits(self, query, key, deterministic) -> bool:
    reason = attention.unsupported_reason(query.shape[2], key.shape[2], query.shape[3])
    if reason is not None:
      attention.warn_once(f"attention='flash' falls back to the XLA path: {reason}")
      return False
    if not deterministic and self.config.dropout_rate > 0:
      attention.warn_once("attention='flash': no dropout on attention weights (others still apply)")
    return True

  def __call__(self, x_q, x_kv, bias, deterministic: bool):
    key, value = self.project_kv(x_kv)
    return self.attend(x_q, key, value, bias, deterministic)


class MLP(nn.Module):
  """ReLU (v1.0) or gated-GELU (v1.1) feed-forward block."""

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    d, f = cfg.d_model, cfg.d_ff
    act = {"relu": jax.nn.relu, "gelu": lambda y: jax.nn.gelu(y, approximate=True)}[
      cfg.activation
    ]  # HF "gelu_new"
    if cfg.is_gated:
      wi_0 = _param(self, "wi_0", (d, f), ("embed", "mlp"), d**-0.5, pdt)
      wi_1 = _param(self, "wi_1", (d, f), ("embed", "mlp"), d**-0.5, pdt)
      hidden = act(dense(x, wi_0.astype(dt))) * dense(x, wi_1.astype(dt))  # [batch, length, mlp]
    else:
      wi = _param(self, "wi", (d, f), ("embed", "mlp"), d**-0.5, pdt)
      hidden = act(dense(x, wi.astype(dt)))  # [batch, length, mlp]
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
    wo = _param(self, "wo", (f, d), ("mlp", "embed"), f**-0.5, pdt)
    return nn.with_logical_constraint(dense(hidden, wo.astype(dt)), ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x, bias, deterministic):
    cfg = self.config
    drop = nn.Dropout(cfg.dropout_rate)
    y = RMSNorm(cfg, name="pre_attention_layer_norm")(x)
    x = x + drop(Attention(cfg, name="attention")(y, y, bias, deterministic), deterministic)
    y = RMSNorm(cfg, name="pre_mlp_layer_norm")(x)
    x = x + drop(MLP(cfg, name="mlp")(y, deterministic), deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  config: T5Config

  def setup(self):
    cfg = self.config
    self.pre_self_attention_layer_norm = RMSNorm(cfg)
    self.self_attention = Attention(cfg, causal=True)
    self.pre_cross_attention_layer_norm = RMSNorm(cfg)
    self.encoder_decoder_attention = Attention(cfg)
    self.pre_mlp_layer_norm = RMSNorm(cfg)
    self.mlp = MLP(cfg)
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def _cross_and_mlp(self, x, cross_kv, cross_bias, deterministic, fused=True):
    y = self.pre_cross_attention_layer_norm(x)
    key, value = cross_kv
    y = self.encoder_decoder_attention.attend(y, key, value, cross_bias, deterministic, fused)
    x = x + self.dropout(y, deterministic)
    y = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
    x = x + self.dropout(y, deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))

  def __call__(self, x, self_bias, encoded, cross_bias, deterministic):
    y = self.pre_self_attention_layer_norm(x)
    x = x + self.dropout(self.self_attention(y, y, self_bias, deterministic), deterministic)
    cross_kv = self.encoder_decoder_attention.project_kv(encoded)
    return self._cross_and_mlp(x, cross_kv, cross_bias, deterministic)

  def cross_kv(self, encoded):
    return self.encoder_decoder_attention.project_kv(encoded)

  def step(self, x, cache, index, self_bias, cross_kv, cross_bias):
    """One decoding position: x [b, 1, d]; cache (key, value) [b, h, T, kv] written at `index`."""
    y = self.pre_self_attention_layer_norm(x)
    key, value = self.self_attention.project_kv(y)  # [b, h, 1, kv]
    cache_key = jax.lax.dynamic_update_slice_in_dim(cache[0], key.astype(cache[0].dtype), index, 2)
    cache_value = jax.lax.dynamic_update_slice_in_dim(
      cache[1], value.astype(cache[1].dtype), index, 2
    )
    y = self.self_attention.attend(y, cache_key, cache_value, self_bias, True, fused=False)
    x = x + y
    x = self._cross_and_mlp(x, cross_kv, cross_bias, True, fused=False)
    return x, (cache_key, cache_value)


def _positions(
  tokens: jax.Array, positions: jax.Array | None, segment_ids: jax.Array | None
) -> jax.Array:
  """Positions for the relative position bias: one shared row [1, length] unless a batch gives
  per-row positions without segment ids.

  In a packed row (segment ids given) positions restart at 0 per segment and count up by one,
  so for two tokens of the same segment `key_position - query_position` equals the difference
  of their indices in the row, and pairs from different segments are masked out. The shared row
  therefore gives the same attention as per-row positions (as in t5x), with a bias of
  [1, heads, q, k] instead of one float32 [batch, heads, q, k] per stack and its gradient, which
  was most of a long-sequence train step's memory.
  """
  if positions is None or segment_ids is not None:
    return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
  return positions


def _bias_from_mask(mask: jax.Array) -> jax.Array:
  """bool [b, q, k] → float32 additive [b, 1, q, k]."""
  return jnp.where(mask, 0.0, _MASK_VALUE).astype(jnp.float32)[:, None]


class T5(nn.Module):
  """The encoder-decoder. `__call__` is teacher-forced; `encode` / `decoder_step` serve decoding."""

  config: T5Config

  def setup(self):
    cfg = self.config
    pdt = jnp.dtype(cfg.param_dtype)
    self.token_embedder = nn.Embed(
      cfg.vocab_size,
      cfg.d_model,
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=pdt,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
    )
    self.encoder_relpos_bias = RelativePositionBias(cfg, bidirectional=True)
    self.encoder_norm = RMSNorm(cfg)
    self.decoder_relpos_bias = RelativePositionBias(cfg, bidirectional=False)
    # Unscanned: modules encoder_layers_0 ... ; scanned: one module encoder_layers (see scan.py).
    if cfg.scan_layers:
      self.encoder_layers = scan.scanned_stack(EncoderLayer, cfg, cfg.num_layers, 2)(cfg)
      self.decoder_layers = scan.scanned_stack(DecoderLayer, cfg, cfg.num_decoder_layers, 4)(cfg)
    else:
      encoder_layer = scan.layer_class(EncoderLayer, cfg, deterministic_argnum=3)
      decoder_layer = scan.layer_class(DecoderLayer, cfg, deterministic_argnum=5)
      self.encoder_layers = [encoder_layer(cfg) for _ in range(cfg.num_layers)]
      self.decoder_layers = [decoder_layer(cfg) for _ in range(cfg.num_decoder_layers)]
    self.decoder_norm = RMSNorm(cfg)
    if not cfg.tie_word_embeddings:
      self.logits_dense = self.param(
        "logits_dense",
        nn.with_logical_partitioning(nn.initializers.normal(cfg.d_model**-0.5), ("embed", "vocab")),
        (cfg.d_model, cfg.vocab_size),
        pdt,
      )
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def _embed(self, tokens, deterministic):
    x = self.token_embedder(tokens)  # [batch, length, embed]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return self.dropout(x, deterministic)

  def encoder_key_mask(self, encoder_input_tokens, encoder_mask=None, encoder_segment_ids=None):
    """[b, k] bool: which encoder positions may be attended to."""
    if encoder_segment_ids is not None:
      return encoder_segment_ids > 0
    if encoder_mask is not None:
      return encoder_mask.astype(bool)
    return encoder_input_tokens != self.config.pad_token_id

  def encode(
    self,
    encoder_input_tokens,
    encoder_mask=None,
    encoder_segment_ids=None,
    encoder_positions=None,
    enable_dropout=False,
  ):
    """[b, l] tokens → [b, l, d] encoded (after the final norm)."""
    det = not enable_dropout
    key_mask = self.encoder_key_mask(encoder_input_tokens, encoder_mask, encoder_segment_ids)
    mask = jnp.broadcast_to(key_mask[:, None, :], key_mask.shape[:1] + key_mask.shape[1:] * 2)
    if encoder_segment_ids is not None:
      mask = mask & (encoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :])
    pos = _positions(encoder_input_tokens, encoder_positions, encoder_segment_ids)
    if encoder_segment_ids is not None:
      segments = (encoder_segment_ids, encoder_segment_ids)
    else:
      segments = (jnp.ones_like(key_mask, jnp.int32), key_mask.astype(jnp.int32))
    bias = attention.Bias(
      self.encoder_relpos_bias(pos, pos), _bias_from_mask(mask), *segments
    )  # position [1|b, h, q, k], mask [b, 1, q, k]
    x = self._embed(encoder_input_tokens, det)
    if self.config.scan_layers:
      x, _ = self.encoder_layers(x, bias, det)
    else:
      for layer in self.encoder_layers:
        x = layer(x, bias, det)
    return self.dropout(self.encoder_norm(x), det)

  def logits_from_hidden(self, y):
    """Final decoder states [b, t, d] → float32 logits [b, t, vocab]."""
    cfg = self.config
    if cfg.tie_word_embeddings:
      y = y * (cfg.d_model**-0.5)
      kernel = self.token_embedder.embedding.T  # [embed, vocab]
    else:
      kernel = self.logits_dense
    logits = dense(y, kernel.astype(y.dtype), out_dtype=jnp.float32)  # [batch, length, vocab]
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

  def decode(
    self,
    encoded,
    encoder_key_mask,
    decoder_input_tokens,
    decoder_segment_ids=None,
    decoder_positions=None,
    decoder_mask=None,
    encoder_segment_ids=None,
    enable_dropout=False,
  ):
    det = not enable_dropout
    length = decoder_input_tokens.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))[None]  # [1, q, k]
    self_mask = jnp.broadcast_to(causal, (decoder_input_tokens.shape[0], length, length))
    cross_mask = jnp.broadcast_to(
      encoder_key_mask[:, None, :], (encoder_key_mask.shape[0], length, encoder_key_mask.shape[1])
    )
    if decoder_segment_ids is not None:
      self_mask = self_mask & (decoder_segment_ids[:, :, None] == decoder_segment_ids[:, None, :])
      if encoder_segment_ids is not None:
        cross_mask = cross_mask & (
          decoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :]
        )
    elif decoder_mask is not None:
      self_mask = self_mask & decoder_mask.astype(bool)[:, None, :]
    pos = _positions(decoder_input_tokens, decoder_positions, decoder_segment_ids)
    ones = jnp.ones(decoder_input_tokens.shape, jnp.int32)  # [b, t]
    if decoder_segment_ids is not None:
      self_segments = (decoder_segment_ids, decoder_segment_ids)
    elif decoder_mask is not None:
      self_segments = (ones, decoder_mask.astype(jnp.int32))
    else:
      self_segments = (ones, ones)
    if decoder_segment_ids is not None and encoder_segment_ids is not None:
      cross_segments = (decoder_segment_ids, encoder_segment_ids)
    else:
      cross_segments = (ones, encoder_key_mask.astype(jnp.int32))
    self_bias = attention.Bias(
      self.decoder_relpos_bias(pos, pos), _bias_from_mask(self_mask), *self_segments
    )
    cross_bias = attention.Bias(None, _bias_from_mask(cross_mask), *cross_segments)
    x = self._embed(decoder_input_tokens, det)
    if self.config.scan_layers:
      x, _ = self.decoder_layers(x, self_bias, encoded, cross_bias, det)
    else:
      for layer in self.decoder_layers:
        x = layer(x, self_bias, encoded, cross_bias, det)
    y = self.dropout(self.decoder_norm(x), det)
    return self.logits_from_hidden(y)

  def __call__(
    self,
    encoder_input_tokens,
    decoder_input_tokens,
    *,
    encoder_segment_ids=None,
    decoder_segment_ids=None,
    encoder_positions=None,
    decoder_positions=None,
    encoder_mask=None,
    decoder_mask=None,
    enable_dropout=False,
  ):
    """Teacher-forced logits, float32 [batch, target_len, vocab].

    Without segment ids, token id 0 in `encoder_input_tokens` is padding (or pass `encoder_mask`)
    and the decoder is causal (plus `decoder_mask` if given). With segment ids (packing), attention
    stays inside a segment and relative positions come from `*_positions`.
    """
    key_mask = self.encoder_key_mask(encoder_input_tokens, encoder_mask, encoder_segment_ids)
    encoded = self.encode(
      encoder_input_tokens, encoder_mask, encoder_segment_ids, encoder_positions, enable_dropout
    )
    return self.decode(
      encoded,
      key_mask,
      decoder_input_tokens,
      decoder_segment_ids,
      decoder_positions,
      decoder_mask,
      encoder_segment_ids,
      enable_dropout,
    )

  # ------------------------------------------------------------------ cached decoding
  def _check_unscanned(self):
    if self.config.scan_layers:
      raise ValueError(
        "cached decoding runs per layer: pass unstack_layers(params, config) with "
        "config.replace(scan_layers=False) (decode.generate does this)"
      )

  def cross_kv(self, encoded):
    """Per decoder layer (key, value) [b, h, l, kv] of the encoder output, computed once."""
    self._check_unscanned()
    return [layer.cross_kv(encoded) for layer in self.decoder_layers]

  def decoder_step(self, tokens, index, cache, cross_kv, encoder_key_mask):
    """tokens [b] at position `index` → (float32 logits [b, vocab], new cache).

    cache: per layer (key, value) [b, h, max_len, kv]; positions > index are masked out.
    """
    self._check_unscanned()
    max_len = cache[0][0].shape[2]
    key_pos = jnp.arange(max_len, dtype=jnp.int32)[None]  # [1, T]
    query_pos = jnp.full((1, 1), index, jnp.int32)
    # Both terms are [1, ., 1, T] here: summed once per step, not once per layer.
    self_bias = attention.Bias(
      None,
      self.decoder_relpos_bias(query_pos, key_pos)  # [1, h, 1, T]
      + jnp.where(key_pos <= index, 0.0, _MASK_VALUE)[:, None, None, :],  # [1, 1, 1, T]
    )
    cross_bias = attention.Bias(None, _bias_from_mask(encoder_key_mask[:, None, :]))  # [b,1,1,l]
    x = self.token_embedder(tokens[:, None])  # [b, 1, d]
    new_cache = []
    for layer, layer_cache, layer_cross in zip(self.decoder_layers, cache, cross_kv, strict=True):
      x, layer_cache = layer.step(x, layer_cache, index, self_bias, layer_cross, cross_bias)
      new_cache.append(layer_cache)
    return self.logits_from_hidden(self.decoder_norm(x))[:, 0], new_cache


def init_cache(config: T5Config, batch: int, max_len: int) -> list[tuple[jax.Array, jax.Array]]:
  shape = (batch, config.num_heads, max_len, config.d_kv)
  dt = jnp.dtype(config.dtype)
  return [(jnp.zeros(shape, dt), jnp.zeros(shape, dt)) for _ in range(config.num_decoder_layers)]


def _init_boxed(config: T5Config, rng: jax.Array):
  tokens = jnp.ones((1, 4), jnp.int32)
  # Parameters do not depend on the attention kernel; the XLA path traces these tiny shapes.
  return T5(config.replace(attention="xla")).init(rng, tokens, tokens)["params"]


def init_params(config: T5Config, rng: jax.Array):
  """Randomly initialised parameters, a plain nested dict of arrays.

  With `config.scan_layers` these are the unscanned parameters of the same seed, stacked: the
  model does not depend on the layout.
  """
  if config.scan_layers:
    return stack_layers(init_params(config.replace(scan_layers=False), rng), config)
  return nn.meta.unbox(_init_boxed(config, rng))


def abstract_params(config: T5Config):
  """Shapes and dtypes of the parameters (jax.ShapeDtypeStruct), without allocating them."""
  return nn.meta.unbox(jax.eval_shape(lambda: _init_boxed(config, jax.random.PRNGKey(0))))


def param_logical_axes(config: T5Config):
  """Pytree like the params, of PartitionSpecs of logical axis names (scanned: "layers" first)."""
  boxed = jax.eval_shape(lambda: _init_boxed(config, jax.random.PRNGKey(0)))
  return nn.get_partition_spec(boxed)


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
