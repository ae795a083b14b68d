"""Sharded `init_from`: each process reads only the slices of an HF T5 checkpoint it owns.

`load_sharded_params` returns the same values as `hf.load_pretrained(...).params` (bitwise),
but as global `jax.Array`s placed with the given shardings, and no process ever holds the whole
checkpoint: for every addressable shard of every parameter (an index in OUR layout) the HF rows
and columns it needs are read from disk, transposed / reshaped to our layout and cast.

How one shard maps to the HF tensor (k = d_kv; our layouts are those of `hf.rename_table`):
  "same"     ours[i, j]             = HF[i, j]
  "linear"   ours[in, out]          = HF[out, in]             (the HF block is transposed)
  "attn_in"  ours[d0:d1, h0:h1, :]  = HF[h0*k:h1*k, d0:d1]     (rows of heads h0:h1)
  "attn_out" ours[h0:h1, :, d0:d1]  = HF[d0:d1, h0*k:h1*k]     (columns of heads h0:h1)
  scanned    ours[l0:l1, ...]       = the blocks of layers l0..l1-1, stacked

Safetensors files are read with plain positioned reads of their row ranges (the header gives the
byte offsets), not through `safe_open`'s memory map: mapped pages count in a process's resident
set, and a column block of a row-major [out, in] tensor (every FSDP-sharded "linear" / "attn_in"
kernel) touches every page of it. Column blocks are read a bounded chunk of rows at a time, so the
only memory beyond the process's own shards is one chunk (`CHUNK_BYTES`) and one block.
`pytorch_model.bin` pickles cannot be sliced on disk: every process maps the whole file
(`torch.load(..., mmap=True, weights_only=True)`) and cuts its shards from it, with a warning.

Example:
  >>> _, shardings = state.abstract_train_state(init_fn=..., logical_specs=..., optimizer=...,
  ...                                           mesh=mesh)
  >>> params = load_sharded_params("flan-t5-xl/", config, shardings.params)
  >>> params["token_embedder"]["embedding"].sharding.spec  # [vocab, embed]
  PartitionSpec('model', 'fsdp')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import struct
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from flanjax.model import hf, scan, t5
from flanjax.model.config import T5Config

# Scratch memory for reading a column block: this many bytes of whole rows at a time.
CHUNK_BYTES = 4 << 20
_SAFETENSORS_DTYPES = {
  "F64": np.dtype("<f8"),
  "F32": np.dtype("<f4"),
  "F16": np.dtype("<f2"),
  "BF16": np.dtype(ml_dtypes.bfloat16),
}
# Fields that decide which HF tensors exist and their shapes (the loop compares all of
# `state.SHAPE_FIELDS` before calling; this keeps the loader's errors true on its own).
_SHAPE_FIELDS = (
  "vocab_size",
  "d_model",
  "d_kv",
  "d_ff",
  "num_layers",
  "num_decoder_layers",
  "num_heads",
  "relative_attention_num_buckets",
  "is_gated",
  "tie_word_embeddings",
)


@dataclasses.dataclass(frozen=True)
class _Stored:
  """One HF tensor on disk: a safetensors byte range, or a (memory-mapped) torch tensor."""

  path: str
  shape: tuple[int, ...]
  dtype: np.dtype | None = None
  offset: int = 0  # absolute byte offset of the data in `path` (safetensors)
  tensor: Any = None  # torch.Tensor (pytorch_model.bin)


@dataclasses.dataclass(frozen=True)
class _Target:
  """One of our parameters: its HF tensor per layer (one entry when not stacked)."""

  path: tuple[str, ...]
  kind: str
  hf_names: tuple[str, ...]
  stacked: bool


# ------------------------------------------------------------------ the index of the checkpoint
def _safetensors_header(path: str) -> dict[str, _Stored]:
  """name → _Stored from a safetensors header, checked against the file size (no data read)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise hf.CheckpointError(f"{path} is truncated or not safetensors: {size} bytes, no header")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > size - 8:
      raise hf.CheckpointError(
        f"{path} is truncated or not safetensors: its header claims {header_len} bytes, "
        f"the file has {size}"
      )
    try:
      header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise hf.CheckpointError(
        f"{path} is corrupt: its safetensors header is not JSON ({e})"
      ) from None
  stored = {}
  data_start = 8 + header_len
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype_name, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError) as e:
      raise hf.CheckpointError(
        f"{path} is corrupt: header entry {name!r} is malformed ({e})"
      ) from None
    if dtype_name not in _SAFETENSORS_DTYPES:
      raise hf.CheckpointError(
        f"{path}: tensor {name!r} has dtype {dtype_name}; expected one of "
        f"{sorted(_SAFETENSORS_DTYPES)}"
      )
    dtype = _SAFETENSORS_DTYPES[dtype_name]
    if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
      raise hf.CheckpointError(
        f"{path} is corrupt: tensor {name!r} of shape {list(shape)} {dtype_name} spans bytes "
        f"[{begin}, {end})"
      )
    if data_start + end > size:
      raise hf.CheckpointError(
        f"{path} is truncated: tensor {name!r} ends at byte {data_start + end}, the file has "
        f"{size} bytes"
      )
    stored[name] = _Stored(path, shape, dtype, data_start + begin)
  return stored


def _torch_tensors(path: str) -> dict[str, _Stored]:
  try:
    import torch
  except ImportError as e:
    raise hf.CheckpointError(
      f"{path} is a PyTorch pickle; reading it needs torch (pip install 'flanjax[test]') "
      "or convert the checkpoint to model.safetensors"
    ) from e
  logging.warning(
    "%s is a PyTorch pickle, which cannot be read slice by slice: every process maps the whole "
    "file. Convert it to safetensors for pod-scale loads.",
    path,
  )
  try:
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
    state = torch.load(path, map_location="cpu", weights_only=True)
  return {name: _Stored(path, tuple(value.shape), tensor=value) for name, value in state.items()}


def _checkpoint_index(directory: str) -> dict[str, _Stored]:
  """name → _Stored over every weight file of `directory` (headers only for safetensors)."""
  stored = {}
  for path in hf._weight_files(directory):
    if not os.path.isfile(path):
      raise hf.CheckpointError(f"weight shard {path} listed in the index is missing")
    stored.update(
      _safetensors_header(path) if path.endswith(".safetensors") else _torch_tensors(path)
    )
  return stored


def checkpoint_config(path_or_hub_name: str | os.PathLike) -> T5Config:
  """The T5Config of an HF checkpoint's config.json (downloading a hub name first)."""
  return hf._read_config(hf._resolve(os.fspath(path_or_hub_name)))


def _check_same_shape(directory: str, checkpoint: T5Config, config: T5Config) -> None:
  diff = {
    name: (getattr(checkpoint, name), getattr(config, name))
    for name in _SHAPE_FIELDS
    if getattr(checkpoint, name) != getattr(config, name)
  }
  if diff:
    raise hf.CheckpointError(
      f"{os.path.join(directory, hf.CONFIG_FILE)} describes a different model shape than the "
      f"config ({{field: (checkpoint, config)}} = {diff})"
    )


# ------------------------------------------------------------------ which tensor feeds which param
def _targets(config: T5Config, stored: dict[str, _Stored], directory: str) -> list[_Target]:
  """Our parameters (stacked when scanned) with their HF tensors, validated as load_pretrained."""
  per_layer = t5.abstract_params(config.replace(scan_layers=False))
  targets: dict[tuple[str, ...], _Target] = {}
  for hf_name, path, kind in hf.rename_table(config):
    if hf_name not in stored and hf_name == "lm_head.weight":
      hf_name = "shared.weight"  # an untied config whose head was saved tied
    if hf_name not in stored:
      raise hf.CheckpointError(
        f"{directory}: tensor {hf_name!r} is missing from the checkpoint "
        f"(needed for parameter {'/'.join(path)})"
      )
    expected_hf = hf._hf_shape(hf._get_path(per_layer, path).shape, kind)
    if stored[hf_name].shape != expected_hf:
      raise hf.CheckpointError(
        f"{stored[hf_name].path}: tensor {hf_name!r} has shape {list(stored[hf_name].shape)}, "
        f"but {hf.CONFIG_FILE} implies {list(expected_hf)}"
      )
    stack = path[0].rpartition("_")[0]
    if config.scan_layers and stack in scan.STACKS:  # encoder_layers_3/... → encoder_layers/...
      key = (stack, *path[1:])
      names = targets[key].hf_names if key in targets else ()
      targets[key] = _Target(key, kind, (*names, hf_name), stacked=True)
    else:
      targets[path] = _Target(path, kind, (hf_name,), stacked=False)
  used = {name for name, _, _ in hf.rename_table(config)} | set(hf._TIED_COPIES)
  extra = sorted(set(stored) - used - {"lm_head.weight"})
  if extra and jax.process_index() == 0:
    logging.warning(
      "%s: ignoring %d tensors flanjax does not use, e.g. %s", directory, len(extra), extra[:3]
    )
  return list(targets.values())


# ------------------------------------------------------------------ reading blocks
class _Reader:
  """Reads [rows, cols] blocks of stored HF tensors as float32, keeping its files open."""

  def __init__(self, stack: contextlib.ExitStack):
    self._stack = stack
    self._files: dict[str, BinaryIO] = {}

  def _read_into(self, stored: _Stored, start: int, out: np.ndarray) -> None:
    if stored.path not in self._files:
      self._files[stored.path] = self._stack.enter_context(open(stored.path, "rb"))
    f = self._files[stored.path]
    f.seek(stored.offset + start)
    if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
      raise hf.CheckpointError(f"{stored.path} is truncated: short read in its data")

  def block(self, stored: _Stored, index: tuple[slice, ...]) -> np.ndarray:
    """float32 HF[index] of a 1-D or 2-D tensor; `index` holds normalised slices."""
    if stored.tensor is not None:
      return stored.tensor[index].float().numpy().copy()  # off the file mapping
    rows, cols = (slice(0, 1), *index) if len(stored.shape) == 1 else index
    width = stored.shape[-1]
    itemsize = stored.dtype.itemsize
    # [rows, cols], aligned: a float32 "same" block becomes the device buffer as it is
    out = _aligned_empty((rows.stop - rows.start, cols.stop - cols.start), stored.dtype)
    if cols.start == 0 and cols.stop == width:  # whole rows: one contiguous read
      self._read_into(stored, rows.start * width * itemsize, out)
    else:  # a column block: whole rows, a bounded chunk at a time
      step = max(1, CHUNK_BYTES // (width * itemsize))
      scratch = np.empty((min(step, len(out)), width), stored.dtype)  # [chunk rows, width]
      for first in range(rows.start, rows.stop, step):
        count = min(step, rows.stop - first)
        self._read_into(stored, first * width * itemsize, scratch[:count])
        out[first - rows.start : first - rows.start + count] = scratch[:count, cols]
    out = out.astype(np.float32, copy=False)
    return out.reshape(-1) if len(stored.shape) == 1 else out  # [cols] or [rows, cols]


def _ours_block(read, kind: str, index: tuple[slice, ...], d_kv: int) -> np.ndarray:
  """Our parameter's block at `index` (one layer), from the HF tensor read by `read(hf_index)`."""
  if kind == "same":
    return read(index)
  if kind == "linear":  # ours [in, out] = HF [out, in].T
    inputs, outputs = index
    return read((outputs, inputs)).T
  if kind == "attn_in":  # ours [d, h, k] = HF [h*k, d].T
    embed, heads, kv = index
    rows = read((slice(heads.start * d_kv, heads.stop * d_kv), embed))  # [heads*k, embed]
    rows = rows.reshape(heads.stop - heads.start, d_kv, -1)  # [heads, k, embed]
    return rows[:, kv, :].transpose(2, 0, 1)  # [embed, heads, kv]
  if kind == "attn_out":  # ours [h, k, d] = HF [d, h*k].T
    heads, kv, embed = index
    cols = read((embed, slice(heads.start * d_kv, heads.stop * d_kv)))  # [embed, heads*k]
    cols = cols.reshape(cols.shape[0], heads.stop - heads.start, d_kv)  # [embed, heads, k]
    return cols[:, :, kv].transpose(1, 2, 0)  # [heads, kv, embed]
  raise AssertionError(kind)


def _normalise(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  out = []
  for item, dim in zip(index, shape, strict=True):
    start, stop, step = item.indices(dim)
    assert step == 1, f"shard index {index} has a step"
    out.append(slice(start, stop))
  return tuple(out)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
  """An uninitialised C-contiguous array starting on a 64-byte boundary: jax's CPU client then
  adopts it as the device buffer instead of copying it (other platforms copy it anyway)."""
  nbytes = math.prod(shape) * dtype.itemsize
  raw = np.empty(nbytes + 64, np.uint8)
  start = -raw.ctypes.data % 64
  return raw[start : start + nbytes].view(dtype).reshape(shape)


def _as_final(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
  aligned = block.flags.c_contiguous and block.ctypes.data % 64 == 0
  if block.dtype == dtype and aligned:
    return block
  out = _aligned_empty(block.shape, dtype)
  out[...] = block  # the cast of load_pretrained's `astype`
  return out


def _place(target, shape, dtype, sharding, stored, reader, config) -> jax.Array:
  """One global array, built device by device: at most one host block exists at a time."""

  def one_layer(hf_name: str, index: tuple[slice, ...]) -> np.ndarray:
    return _ours_block(
      lambda hf_index: reader.block(stored[hf_name], hf_index), target.kind, index, config.d_kv
    )

  def host_block(index: tuple[slice, ...]) -> np.ndarray:
    if not target.stacked:
      return _as_final(one_layer(target.hf_names[0], index), dtype)
    layers, inner = index[0], index[1:]
    block = _aligned_empty(tuple(item.stop - item.start for item in index), dtype)  # [layers, ...]
    for i, layer in enumerate(range(layers.start, layers.stop)):
      block[i] = one_layer(target.hf_names[layer], inner)
    return block

  placed: dict[tuple[tuple[int, int], ...], jax.Array] = {}  # replicas copy, not re-read
  shards = []
  for device, index in sharding.addressable_devices_indices_map(shape).items():
    index = _normalise(index, shape)
    key = tuple((item.start, item.stop) for item in index)
    source = placed[key] if key in placed else host_block(index)
    shards.append(jax.device_put(source, device).block_until_ready())
    placed.setdefault(key, shards[-1])
    del source  # the host block is freed (or adopted) before the next one is read
  return jax.make_array_from_single_device_arrays(shape, sharding, shards)


# ------------------------------------------------------------------ the entry point
def load_sharded_params(
  path_or_hub_name: str | os.PathLike, config: T5Config, shardings: Any
) -> dict:
  """Parameters of an HF T5 checkpoint as global jax.Arrays with `shardings`, read shard by shard.

  Args:
    path_or_hub_name: a local HF T5 directory (model.safetensors, a sharded safetensors index,
      or pytorch_model.bin) or a hub name.
    config: the model config (its `scan_layers` decides the tree; `param_dtype` the dtype); its
      shape must match the checkpoint's config.json.
    shardings: the NamedSharding tree of the parameters, e.g.
      `state.abstract_train_state(...)[1].params`.

  Raises CheckpointError (a ValueError) naming the file and tensor for a missing tensor, a wrong
  shape, or a truncated / corrupt file, before anything is placed.

  Example:
    >>> params = load_sharded_params("t5-small/", config, shardings.params)
    >>> params["encoder_layers_0"]["attention"]["q"].shape  # [embed, heads, kv]
    (512, 8, 64)
  """
  directory = hf._resolve(os.fspath(path_or_hub_name))
  _check_same_shape(directory, hf._read_config(directory), config)
  abstract = t5.abstract_params(config)
  shardings_by_path = {
    jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_flatten_with_path(shardings)[0]
  }
  abstract_by_path = {
    jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]
  }
  if set(shardings_by_path) != set(abstract_by_path):
    missing = sorted(set(abstract_by_path) - set(shardings_by_path))[:3]
    extra = sorted(set(shardings_by_path) - set(abstract_by_path))[:3]
    raise ValueError(
      f"load_sharded_params: the shardings do not match the parameters of the config "
      f"(scan_layers={config.scan_layers}): missing {missing}, unexpected {extra}"
    )
  stored = _checkpoint_index(directory)
  targets = _targets(config, stored, directory)  # validates every tensor before reading any
  params: dict = {}
  with contextlib.ExitStack() as stack:
    reader = _Reader(stack)
    for target in targets:
      key = jax.tree_util.keystr(tuple(jax.tree_util.DictKey(k) for k in target.path))
      leaf = abstract_by_path[key]
      array = _place(
        target, leaf.shape, jnp.dtype(leaf.dtype), shardings_by_path[key], stored, reader, config
      )
      hf._set_path(params, target.path, array)
  return params
