"""Hugging Face interop: load and save T5 checkpoints, and the `T5Model` object.

`load_pretrained` reads a local HF T5 directory (config.json + model.safetensors, a sharded
safetensors index, or pytorch_model.bin) or, when online, a hub name through huggingface_hub.
`save_pretrained` writes config.json + model.safetensors that
`transformers.T5ForConditionalGeneration.from_pretrained` loads.

The mapping is a rename table plus reshapes: HF stores a Linear as [out, in]; we store attention
kernels as [embed, heads, kv] / [heads, kv, embed] and dense kernels as [in, out].

Example:
  >>> model = load_pretrained("path/to/flan-t5-small")
  >>> model.generate(input_ids, max_new_tokens=16)
  >>> save_pretrained(model, "exported/")
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from flanjax import partitioning
from flanjax.model import decode, t5
from flanjax.model.config import EXECUTION_FIELDS, T5Config

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
  "spiece.model",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "generation_config.json",
)
# Tensors HF writes that are tied copies of `shared.weight`.
_TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


class CheckpointError(ValueError):
  """A directory or file that is not a usable HF T5 checkpoint."""


# ------------------------------------------------------------------ the rename table
def _attention_names(hf_prefix: str, ours: tuple[str, ...]):
  for proj in ("q", "k", "v", "o"):
    yield f"{hf_prefix}.{proj}.weight", (*ours, proj), "attn_out" if proj == "o" else "attn_in"


def _mlp_names(hf_prefix: str, ours: tuple[str, ...], config: T5Config):
  names = ("wi_0", "wi_1", "wo") if config.is_gated else ("wi", "wo")
  for name in names:
    yield f"{hf_prefix}.{name}.weight", (*ours, "mlp", name), "linear"


def rename_table(config: T5Config) -> Iterator[tuple[str, tuple[str, ...], str]]:
  """Yields (HF tensor name, our param path, kind of reshape) for every parameter."""
  yield "shared.weight", ("token_embedder", "embedding"), "same"
  yield (
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    ("encoder_relpos_bias", "rel_embedding"),
    "same",
  )
  yield (
    "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    ("decoder_relpos_bias", "rel_embedding"),
    "same",
  )
  for i in range(config.num_layers):
    hf, ours = f"encoder.block.{i}", (f"encoder_layers_{i}",)
    yield from _attention_names(f"{hf}.layer.0.SelfAttention", (*ours, "attention"))
    yield f"{hf}.layer.0.layer_norm.weight", (*ours, "pre_attention_layer_norm", "scale"), "same"
    yield from _mlp_names(f"{hf}.layer.1.DenseReluDense", ours, config)
    yield f"{hf}.layer.1.layer_norm.weight", (*ours, "pre_mlp_layer_norm", "scale"), "same"
  yield "encoder.final_layer_norm.weight", ("encoder_norm", "scale"), "same"
  for i in range(config.num_decoder_layers):
    hf, ours = f"decoder.block.{i}", (f"decoder_layers_{i}",)
    yield from _attention_names(f"{hf}.layer.0.SelfAttention", (*ours, "self_attention"))
    yield (
      f"{hf}.layer.0.layer_norm.weight",
      (*ours, "pre_self_attention_layer_norm", "scale"),
      "same",
    )
    yield from _attention_names(
      f"{hf}.layer.1.EncDecAttention", (*ours, "encoder_decoder_attention")
    )
    yield (
      f"{hf}.layer.1.layer_norm.weight",
      (*ours, "pre_cross_attention_layer_norm", "scale"),
      "same",
    )
    yield from _mlp_names(f"{hf}.layer.2.DenseReluDense", ours, config)
    yield f"{hf}.layer.2.layer_norm.weight", (*ours, "pre_mlp_layer_norm", "scale"), "same"
  yield "decoder.final_layer_norm.weight", ("decoder_norm", "scale"), "same"
  if not config.tie_word_embeddings:
    yield "lm_head.weight", ("logits_dense",), "linear"


def _to_ours(hf_array: np.ndarray, kind: str, config: T5Config) -> np.ndarray:
  h, k = config.num_heads, config.d_kv
  if kind == "same":
    return hf_array
  if kind == "linear":  # HF [out, in] → [in, out]
    return hf_array.T
  if kind == "attn_in":  # HF [h*k, d] → [d, h, k]
    return hf_array.T.reshape(hf_array.shape[1], h, k)
  if kind == "attn_out":  # HF [d, h*k] → [h, k, d]
    return hf_array.T.reshape(h, k, hf_array.shape[0])
  raise AssertionError(kind)


def _to_hf(array: np.ndarray, kind: str) -> np.ndarray:
  if kind == "same":
    return array
  if kind == "linear":  # [in, out] → HF [out, in]
    return array.T
  if kind == "attn_in":  # [d, h, k] → HF [h*k, d]
    return array.reshape(array.shape[0], -1).T
  if kind == "attn_out":  # [h, k, d] → HF [d, h*k]
    return array.reshape(-1, array.shape[-1]).T
  raise AssertionError(kind)


def _hf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  """The HF tensor shape of one of our parameters: the shape side of `_to_hf`, no array needed."""
  if kind == "same":
    return tuple(shape)
  if kind == "linear":  # [in, out] → [out, in]
    return tuple(shape[::-1])
  if kind == "attn_in":  # [d, h, k] → [h*k, d]
    return (shape[1] * shape[2], shape[0])
  if kind == "attn_out":  # [h, k, d] → [d, h*k]
    return (shape[2], shape[0] * shape[1])
  raise AssertionError(kind)


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get_path(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


# ------------------------------------------------------------------ reading checkpoints
def _read_config(directory: str) -> T5Config:
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    raise CheckpointError(f"{directory} is not a T5 checkpoint: {CONFIG_FILE} is missing")
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON: {e}") from e
  archs = raw.get("architectures") or []
  if raw.get("model_type") != "t5" and not any(a.startswith("T5") for a in archs):
    raise CheckpointError(
      f"{path} describes model_type={raw.get('model_type')!r} (architectures={archs}); "
      "flanjax loads T5 encoder-decoder checkpoints only"
    )
  missing = [
    k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads") if k not in raw
  ]
  if missing:
    raise CheckpointError(f"{path} lacks the T5 fields {missing}")
  # transformers 5 always writes tie_word_embeddings=true for T5 and keeps the v1.0/v1.1
  # distinction (rescale before a tied head) in scale_decoder_outputs.
  if "scale_decoder_outputs" in raw:
    raw = dict(raw, tie_word_embeddings=bool(raw["scale_decoder_outputs"]))
  try:
    return T5Config.from_hf_config(raw)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{path}: {e}") from e


def _weight_files(directory: str) -> list[str]:
  for index_name in (SAFETENSORS_INDEX, TORCH_INDEX):
    index = os.path.join(directory, index_name)
    if os.path.isfile(index):
      with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      return [os.path.join(directory, s) for s in shards]
  for name in (SAFETENSORS_FILE, TORCH_FILE):
    if os.path.isfile(os.path.join(directory, name)):
      return [os.path.join(directory, name)]
  raise CheckpointError(
    f"{directory} has no weights: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, "
    f"{TORCH_FILE} or {TORCH_INDEX}"
  )


def _read_tensors(files: list[str]) -> dict[str, tuple[np.ndarray, str]]:
  """name → (float32 numpy array, file it came from)."""
  tensors = {}
  for path in files:
    if not os.path.isfile(path):
      raise CheckpointError(f"weight shard {path} listed in the index is missing")
    if path.endswith(".safetensors"):
      from safetensors import safe_open

      try:
        with safe_open(path, framework="flax") as f:
          for name in f.keys():
            tensors[name] = (np.asarray(f.get_tensor(name), np.float32), path)
      except Exception as error:  # truncated, garbled header, ...: name the file, one line
        raise CheckpointError(
          f"{path} is not a readable safetensors file ({type(error).__name__}: "
          f"{' '.join(str(error).split())[:200]}); re-download or re-export it"
        ) from None
    else:
      try:
        import torch
      except ImportError as e:
        raise CheckpointError(
          f"{path} is a PyTorch pickle; reading it needs torch (pip install 'flanjax[test]') "
          "or convert the checkpoint to model.safetensors"
        ) from e
      state = torch.load(path, map_location="cpu", weights_only=True)
      for name, value in state.items():
        tensors[name] = (value.float().numpy(), path)
  return tensors


def _resolve(path_or_name: str) -> str:
  if os.path.isdir(path_or_name):
    return path_or_name
  if os.path.exists(path_or_name) or path_or_name.startswith((".", "/", "~")):
    raise CheckpointError(f"{path_or_name} is not a directory holding an HF T5 checkpoint")
  try:
    from huggingface_hub import snapshot_download

    return snapshot_download(
      path_or_name, allow_patterns=[CONFIG_FILE, "*.safetensors", "*.json", "spiece.model"]
    )
  except Exception as e:  # noqa: BLE001 — any hub failure becomes one clear message
    raise CheckpointError(
      f"could not load {path_or_name!r}: it is not a local directory and the Hugging Face hub "
      f"did not provide it ({type(e).__name__}: {e})"
    ) from e


def load_pretrained(
  path_or_hub_name: str | os.PathLike, dtype: str = "float32", mesh=None, **execution
) -> T5Model:
  """Loads an HF T5 checkpoint (local directory or hub name) as a `T5Model`.

  `dtype` sets both the parameter and the compute dtype ("float32" or "bfloat16"). `execution`
  sets T5Config's execution fields (remat, scan_layers, attention); with scan_layers=True the
  parameters come back stacked (`t5.stack_layers`). With a device `mesh` the model comes back
  on it (`T5Model.on_mesh`), and each process reads from disk only the slices its own devices
  hold (`hf_sharded.load_sharded_params`): nothing holds the whole checkpoint.

  Example:
    >>> model = load_pretrained("flan-t5-small", scan_layers=True)
    >>> model.params["encoder_layers"]["mlp"]["wo"].shape  # [layers, mlp, embed]
    (8, 1024, 512)
  """
  unknown = sorted(set(execution) - set(EXECUTION_FIELDS))
  if unknown:
    raise TypeError(
      f"load_pretrained: unknown options {unknown}; expected some of {EXECUTION_FIELDS}"
    )
  directory = _resolve(os.fspath(path_or_hub_name))
  config = _read_config(directory).replace(dtype=dtype, param_dtype=dtype, **execution)
  if mesh is not None:
    from flanjax.model import hf_sharded

    params = hf_sharded.load_sharded_params(directory, config, _param_shardings(config, mesh))
    return T5Model(config, params, source_dir=directory, mesh=mesh)
  tensors = _read_tensors(_weight_files(directory))
  shapes = t5.abstract_params(config.replace(scan_layers=False))  # the rename table is per layer
  params: dict = {}
  for hf_name, path, kind in rename_table(config):
    if hf_name not in tensors and hf_name == "lm_head.weight":
      # An untied (v1.1) config whose head was saved tied: the head is the embedding.
      hf_name = "shared.weight"
    if hf_name not in tensors:
      raise CheckpointError(
        f"{directory}: tensor {hf_name!r} is missing from the checkpoint "
        f"(needed for parameter {'/'.join(path)})"
      )
    array, source = tensors[hf_name]
    if hf_name == "shared.weight" and path == ("logits_dense",):
      kind = "linear"
    expected_hf = _hf_shape(_get_path(shapes, path).shape, kind)
    if array.shape != expected_hf:
      raise CheckpointError(
        f"{source}: tensor {hf_name!r} has shape {list(array.shape)}, but {CONFIG_FILE} implies "
        f"{list(expected_hf)}"
      )
    _set_path(params, path, _to_ours(array, kind, config).astype(jnp.dtype(dtype)))
  used = {name for name, _, _ in rename_table(config)} | set(_TIED_COPIES) | {"lm_head.weight"}
  extra = sorted(set(tensors) - used)
  if extra:
    logging.warning(
      "%s: ignoring %d tensors flanjax does not use, e.g. %s", directory, len(extra), extra[:3]
    )
  if config.scan_layers:
    params = t5.stack_layers(params, config)  # numpy: stacked on the host, copied once
  return T5Model(config, jax.tree.map(jnp.asarray, params), source_dir=directory)


def save_pretrained(model: T5Model, out_dir: str | os.PathLike, tokenizer_dir: str | None = None):
  """Writes config.json + model.safetensors (float32) readable by transformers.

  Scanned (stacked) parameters are written per layer, under the usual HF names.

  Tokenizer files (spiece.model, tokenizer.json, ...) are copied from `tokenizer_dir`, or from the
  directory the model was loaded from.
  """
  from safetensors.numpy import save_file

  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  config = model.config
  params = jax.device_get(model.params)
  if config.scan_layers:
    params = t5.unstack_layers(params, config)
  tensors = {}
  for hf_name, path, kind in rename_table(config):
    array = np.asarray(_get_path(params, path), np.float32)
    tensors[hf_name] = np.ascontiguousarray(_to_hf(array, kind))
  save_file(tensors, os.path.join(out_dir, SAFETENSORS_FILE), metadata={"format": "pt"})
  hf_config = config.to_hf_config()
  hf_config["torch_dtype"] = "float32"
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  source = tokenizer_dir or model.source_dir
  if source:
    for name in TOKENIZER_FILES:
      if os.path.isfile(os.path.join(source, name)):
        shutil.copy(os.path.join(source, name), os.path.join(out_dir, name))
  return out_dir


# ------------------------------------------------------------------ the model object
def _param_shardings(config: T5Config, mesh):
  """The NamedShardings of `config`'s parameters on `mesh` (training's: `param_shardings`)."""
  return partitioning.param_shardings(
    t5.param_logical_axes(config), t5.abstract_params(config), mesh
  )


@functools.partial(jax.jit, static_argnames=("config",))
def _logits(
  params, input_ids, decoder_input_ids, attention_mask, decoder_attention_mask, *, config
):
  return t5.T5(config).apply(
    {"params": params},
    input_ids,
    decoder_input_ids,
    encoder_mask=attention_mask,
    decoder_mask=decoder_attention_mask,
  )


class T5Model:
  """A T5Config and its parameters, with HF-like `logits` and `generate`.

  `mesh`: the device mesh the parameters are placed on (`on_mesh`), or None (one device). On a
  mesh, `generate` and rank classification feed their batches as global arrays with rows over
  data x fsdp, so every device decodes or scores its share; every process then passes the same
  (whole) batch and gets the whole result.
  """

  def __init__(self, config: T5Config, params, source_dir: str | None = None, mesh=None):
    self.config = config
    self.params = params
    self.source_dir = source_dir
    self.mesh = mesh

  def on_mesh(self, mesh) -> T5Model:
    """This model with its parameters placed on `mesh` (`partitioning.param_shardings`: embed
    over fsdp, heads / mlp / vocab over model); parameters already placed so are not copied.

    Example:
      >>> model = load_pretrained("flan-t5-small").on_mesh(partitioning.make_mesh(MeshConfig()))
    """
    params = partitioning.place(self.params, _param_shardings(self.config, mesh))
    return T5Model(self.config, params, source_dir=self.source_dir, mesh=mesh)

  @classmethod
  def init(cls, config: T5Config, seed: int = 0) -> T5Model:
    return cls(config, t5.init_params(config, jax.random.PRNGKey(seed)))

  def logits(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
    """float32 [batch, target_len, vocab], as HF `T5ForConditionalGeneration(...).logits`."""
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if attention_mask is None:
      attention_mask = input_ids != self.config.pad_token_id
    dec_mask = None if decoder_attention_mask is None else jnp.asarray(decoder_attention_mask)
    return _logits(
      self.params,
      input_ids,
      jnp.asarray(decoder_input_ids, jnp.int32),
      jnp.asarray(attention_mask),
      dec_mask,
      config=self.config,
    )

  def generate(
    self,
    input_ids,
    attention_mask=None,
    max_new_tokens: int = 64,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    length_penalty: float = 1.0,
  ) -> np.ndarray:
    """Generated ids [batch, <= max_new_tokens] (no start token; pad after EOS)."""
    return decode.generate(
      self.config,
      self.params,
      input_ids,
      attention_mask,
      max_new_tokens=max_new_tokens,
      num_beams=num_beams,
      do_sample=do_sample,
      temperature=temperature,
      top_k=top_k,
      seed=seed,
      length_penalty=length_penalty,
      mesh=self.mesh,
    )
