"""Layer stacks for `T5Config.remat` / `.scan_layers`, and per-layer ↔ stacked converters.

Unscanned, the layers of a stack are modules `encoder_layers_0 … encoder_layers_{n-1}` (so are
their parameters, matching the HF rename table). Scanned, a stack is one module `encoder_layers`
run by `nn.scan`, its parameters stacked on a new leading axis with the logical name "layers"
(`LAYERS_AXIS`), e.g. `encoder_layers/attention/q` [layers, embed, heads, kv]. Compile time then
no longer grows with depth.

Remat policies (`nn.remat` around each layer, inside the scan when scanned):
  "full": `jax.checkpoint` with no saveable values: only the layer input is kept, the whole
    layer is recomputed in the backward pass.
  "dots": `jax.checkpoint_policies.dots_with_no_batch_dims_saveable`: the outputs of the weight
    matmuls (q/k/v/o projections, MLP wi/wo: 2-D matmuls, no batch dimension) are kept; the
    attention score / weight tensors ('bhqk' einsums have batch dimensions), softmax, norms and
    activations are recomputed. Most of the saving of "full" at a fraction of its recompute.

Example:
  >>> stacked = stack_layers(params, cfg)  # {"encoder_layers": {...[2, ...]}, ...}
  >>> stacked["encoder_layers"]["attention"]["q"].shape  # [layers, embed, heads, kv]
  (2, 64, 4, 16)
  >>> unstack_layers(stacked, cfg)["encoder_layers_1"]["attention"]["q"].shape
  (64, 4, 16)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flanjax.model.config import T5Config

LAYERS_AXIS = "layers"
STACKS = ("encoder_layers", "decoder_layers")


def remat_policy(config: T5Config):
  """The `jax.checkpoint` policy of `config.remat` ("none" → None: no remat at all)."""
  return {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  }[config.remat]


def layer_class(layer_cls: type[nn.Module], config: T5Config, deterministic_argnum: int):
  """`layer_cls`, wrapped in `nn.remat` when `config.remat` asks for it.

  `deterministic_argnum` is the position of the `deterministic` flag in `__call__` (self = 0):
  it is static, as dropout needs a Python bool.
  """
  if config.remat == "none":
    return layer_cls
  return nn.remat(
    layer_cls,
    policy=remat_policy(config),
    prevent_cse=not config.scan_layers,  # a scan already keeps the recompute from being CSE'd
    static_argnums=(deterministic_argnum,),
  )


def scanned_stack(layer_cls: type[nn.Module], config: T5Config, length: int, num_args: int):
  """A module class running `length` layers of `layer_cls` as one `nn.scan`.

  `layer_cls.__call__(x, *args)` takes `num_args` further arguments, the last of them the
  `deterministic` flag; all are broadcast to every layer. Calling the stack returns `(x, None)`.
  """

  class Body(layer_cls):
    def __call__(self, x, *args):
      return super().__call__(x, *args), None

  Body.__name__ = f"Scanned{layer_cls.__name__}"
  body = layer_class(Body, config, deterministic_argnum=num_args + 1)
  return nn.scan(
    body,
    variable_axes={"params": 0},
    split_rngs={"params": True, "dropout": True},
    in_axes=(nn.broadcast,) * num_args,
    length=length,
    metadata_params={nn.PARTITION_NAME: LAYERS_AXIS},
  )


def _counts(config: T5Config) -> dict[str, int]:
  return {"encoder_layers": config.num_layers, "decoder_layers": config.num_decoder_layers}


def _stack(*arrays):
  if all(isinstance(a, np.ndarray) for a in arrays):
    return np.stack(arrays)  # host arrays stay on the host (HF import)
  return jnp.stack(arrays)  # [layers, ...]


def stack_layers(params: dict, config: T5Config) -> dict:
  """Per-layer tree (`encoder_layers_{i}`) → stacked tree (`encoder_layers`, leading layers axis).

  Other entries are shared, not copied. A tree that is already stacked is an error.
  """
  out = dict(params)
  for stack, count in _counts(config).items():
    names = [f"{stack}_{i}" for i in range(count)]
    missing = [name for name in names if name not in out]
    if missing:
      raise ValueError(
        f"stack_layers: parameters lack {missing[:3]} (already stacked, or a config with "
        f"different layer counts?); keys: {sorted(out)}"
      )
    out[stack] = jax.tree.map(_stack, *[out.pop(name) for name in names])
  return out


def unstack_layers(params: dict, config: T5Config) -> dict:
  """Stacked tree (`encoder_layers`, leading layers axis) → per-layer (`encoder_layers_{i}`)."""
  out = dict(params)
  for stack, count in _counts(config).items():
    if stack not in out:
      raise ValueError(f"unstack_layers: parameters lack {stack!r}; keys: {sorted(out)}")
    stacked = out.pop(stack)
    for i in range(count):
      out[f"{stack}_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out
