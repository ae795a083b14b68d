"""`RunConfig`: the one typed run configuration, and the only reader of an ml_collections config.

Config files (`configs/*.py`, `get_config()`) return an ml_collections ConfigDict;
`RunConfig.from_config_dict` turns it into frozen dataclasses, and everything below the command
line (commands, the training loop, evaluation, benchmarks) takes a `RunConfig` or one of its
parts, never the ConfigDict. The dataclass defaults below are the ONLY table of defaults:
`configs/common.base_config()` is built from them (`default_config_dict()`).

Each field names its config key (`metadata["key"]`). Keys of the shared contract (DESIGN.md) are
`required` in a config file; the others take the default when absent. Every error names the key
to fix and is raised before anything is compiled or written.

Example:
  >>> rc = RunConfig.from_config_dict(default_config_dict())
  >>> rc.data.mixture, rc.data.input_length, rc.train.z_loss, rc.optimizer.name
  ('toy', 512, 0.0001, 'adafactor')
  >>> rc.model.d_model
  512
  >>> rc.replace_key("train.steps", 5).train.steps
  5
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from typing import Any

from flanjax.model.config import T5Config
from flanjax.partitioning import MeshConfig
from flanjax.train.optim import OptimizerConfig

DATA_DIR_ENV = "FLANJAX_DATA_DIR"
NON_FINITE_POLICIES = ("skip", "stop")
_SENTINEL = object()


def _key(key: str, default: Any, *, required: bool = False, doc: str = "") -> Any:
  """A dataclass field bound to config key `key` (dotted)."""
  metadata = {"key": key, "required": required, "doc": doc}
  if isinstance(default, tuple | list):
    return dataclasses.field(default=tuple(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What data the run reads: mixtures, lengths, packing, data dir and vocabulary."""

  mixture: str = _key("mixture", "toy", required=True)
  eval_mixtures: tuple[str, ...] = _key("eval_mixtures", ("toy",), required=True)
  input_length: int = _key("lengths.inputs", 512, required=True)
  target_length: int = _key("lengths.targets", 128, required=True)
  pack: bool = _key("train.pack", True, doc="pack several examples per row (segment ids)")
  data_dir: str = _key("data_dir", "", required=True, doc=f'"" → env {DATA_DIR_ENV}')
  vocab: str = _key("vocab", "", doc='SentencePiece .model or dir; "" → init_from\'s, else bytes')
  toy_vocab: str = _key("toy_vocab", "", doc='toy tasks: "" trained word-level, "bytes", a path')
  benchmark_dir: str = _key(
    "benchmark_dir", "", doc='"" → env FLANJAX_BENCHMARK_DIR (e.g. ../shared/benchmarks)'
  )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How the loop trains: steps, batch, logging, checkpoints, loss options."""

  steps: int = _key("train.steps", 1000, required=True)
  batch_size: int = _key("train.batch_size", 32, required=True)
  log_every: int = _key("train.log_every", 50, required=True)
  checkpoint_every: int = _key("train.checkpoint_every", 500, required=True)
  keep_checkpoints: int = _key("train.keep_checkpoints", 3, required=True)
  eval_every: int = _key("train.eval_every", 0, required=True, doc="0 = no eval in training")
  microbatches: int = _key("train.microbatches", 1)
  z_loss: float = _key("train.z_loss", 1e-4)
  label_smoothing: float = _key("train.label_smoothing", 0.0)
  non_finite: str = _key("train.non_finite", "skip", doc='"skip" the update, or "stop"')
  max_consecutive_skips: int = _key(
    "train.max_consecutive_skips", 100, doc="stop after this many skipped steps in a row; 0 = never"
  )
  async_checkpoints: bool = _key("train.async_checkpoints", True)
  peak_flops_per_device: float = _key(
    "train.peak_flops_per_device", 0.0, doc="0: datasheet for known chips, else measured"
  )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How `evaluate` scores a model (also used in training every `train.eval_every` steps)."""

  split: str = _key("eval.split", "test")
  selection_split: str = _key("eval.selection_split", "validation")
  test_fallback_split: str = _key(
    "eval.test_fallback_split", "validation", doc='a task without "test" reports this split'
  )
  max_examples: int = _key("eval.max_examples", 0, doc="per template and split; 0 = all")
  batch_size: int = _key("eval.batch_size", 32)
  num_beams: int = _key("eval.num_beams", 1)
  length_normalize: bool = _key("eval.length_normalize", False)
  input_length: int = _key("eval.inputs", 0, doc="0 → lengths.inputs")
  target_length: int = _key("eval.targets", 0, doc="0 → lengths.targets")


# Sections read from `model.*`, `optimizer.*`, `mesh.*`: their own dataclasses, field = key.
_PLAIN_SECTIONS = {"model": T5Config, "optimizer": OptimizerConfig, "mesh": MeshConfig}
_REQUIRED_PLAIN = {
  "optimizer.name",
  "optimizer.learning_rate",
  "optimizer.schedule",
  "mesh.data",
  "mesh.fsdp",
  "mesh.model",
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The whole run, typed. Build it with `from_config_dict`."""

  seed: int = _key("seed", 0, required=True)
  init_from: str = _key("init_from", "", required=True, doc='HF T5 dir or hub name; "" = random')
  model: T5Config = dataclasses.field(default_factory=T5Config)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

  # ------------------------------------------------------------------ reading
  @classmethod
  def from_config_dict(cls, config: Any) -> RunConfig:
    """Reads an ml_collections ConfigDict (or a nested dict); errors name the key."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    unknown = sorted(set(_flatten(tree)) - set(all_keys()))
    if unknown:
      raise ValueError(_unknown_key_message(unknown[0]))
    values = {}
    for name, section in _keyed_sections().items():
      values[name] = section(**_read_keyed(section, tree))
    top = _read_keyed(RunConfig, tree)
    for name, section in _PLAIN_SECTIONS.items():
      values[name] = _read_plain(name, section, tree)
    rc = cls(**top, **values)
    rc.check_values()
    return rc

  def check_values(self) -> None:
    """Device-independent checks; each error names its config key."""
    positive = {
      "train.steps": self.train.steps,
      "train.batch_size": self.train.batch_size,
      "lengths.inputs": self.data.input_length,
      "lengths.targets": self.data.target_length,
      "train.log_every": self.train.log_every,
      "train.microbatches": self.train.microbatches,
      "train.keep_checkpoints": self.train.keep_checkpoints,
      "eval.batch_size": self.eval.batch_size,
      "eval.num_beams": self.eval.num_beams,
    }
    for key, value in positive.items():
      if value <= 0:
        raise ValueError(f"config.{key}={value} must be positive")
    for key, value in {
      "train.checkpoint_every": self.train.checkpoint_every,
      "train.eval_every": self.train.eval_every,
      "train.max_consecutive_skips": self.train.max_consecutive_skips,
      "eval.max_examples": self.eval.max_examples,
      "eval.inputs": self.eval.input_length,
      "eval.targets": self.eval.target_length,
    }.items():
      if value < 0:
        raise ValueError(f"config.{key}={value} must be >= 0 (0 = off / default)")
    if self.train.non_finite not in NON_FINITE_POLICIES:
      raise ValueError(
        f"config.train.non_finite={self.train.non_finite!r} is not one of {NON_FINITE_POLICIES}"
      )
    if not 0.0 <= self.train.label_smoothing < 1.0:
      raise ValueError(
        f"config.train.label_smoothing={self.train.label_smoothing} must be in [0, 1)"
      )
    if self.train.batch_size % self.train.microbatches:
      raise ValueError(
        f"config.train.batch_size={self.train.batch_size} is not divisible by "
        f"config.train.microbatches={self.train.microbatches}"
      )
    if not self.data.mixture:
      raise ValueError("config.mixture is empty: name a registered mixture or task")
    self.check_init_from()

  def check_init_from(self) -> None:
    """`init_from` must be a directory with config.json, or a hub name (not a missing path)."""
    path = os.path.expanduser(self.init_from)
    if not path:
      return
    if os.path.isdir(path):
      if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
          f"config.init_from={self.init_from!r} is a directory without config.json "
          "(expected an HF T5 checkpoint directory)"
        )
    elif os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
      raise ValueError(
        f"config.init_from={self.init_from!r} does not exist (expected an HF T5 checkpoint "
        "directory or a hub name like google/flan-t5-small)"
      )

  def validate(self, num_devices: int, process_count: int) -> tuple[int, int, int]:
    """Checks that depend on the devices; returns the resolved (data, fsdp, model) mesh shape."""
    shape = self.mesh.resolve(num_devices)
    batch_shards = shape[0] * shape[1]
    batch_size, micro = self.train.batch_size, self.train.microbatches
    if batch_size % batch_shards:
      raise ValueError(
        f"config.train.batch_size={batch_size} is not divisible by the batch shards "
        f"mesh.data x mesh.fsdp = {shape[0]} x {shape[1]}"
      )
    if batch_size % process_count:
      raise ValueError(
        f"config.train.batch_size={batch_size} is not divisible by {process_count} processes"
      )
    if (batch_size // micro) % batch_shards:
      raise ValueError(
        f"config.train.microbatches={micro}: microbatches of {batch_size // micro} rows do not "
        f"divide over {batch_shards} batch shards (mesh.data x mesh.fsdp)"
      )
    return shape

  # ------------------------------------------------------------------ derived views
  @property
  def eval_config(self) -> EvalConfig:
    """`eval.*` with the lengths filled in: `eval.inputs/targets`, else `lengths.*`."""
    return dataclasses.replace(
      self.eval,
      input_length=self.eval.input_length or self.data.input_length,
      target_length=self.eval.target_length or self.data.target_length,
    )

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON-able dict, keyed like the dataclasses (recorded in the workdir)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @classmethod
  def from_recorded(cls, recorded: dict[str, Any]) -> RunConfig:
    """The inverse of `to_dict()` (a workdir's config.json), checked like a config file."""
    flat = {}
    for name, section in {"": RunConfig, **_keyed_sections()}.items():
      values = recorded.get(name, {}) if name else recorded
      for field in dataclasses.fields(section):
        if "key" in field.metadata and field.name in values:
          flat[field.metadata["key"]] = values[field.name]
    for section in _PLAIN_SECTIONS:
      for name, value in recorded.get(section, {}).items():
        flat[f"{section}.{name}"] = value
    return cls.from_config_dict(_unflatten(flat))

  def replace_key(self, dotted: str, value: Any) -> RunConfig:
    """A copy with one config key changed (checked again), e.g. `replace_key("train.steps", 5)`."""
    flat = to_flat_dict(self)
    if dotted not in flat:
      raise ValueError(_unknown_key_message(dotted))
    flat[dotted] = value
    return RunConfig.from_config_dict(_unflatten(flat))


# ---------------------------------------------------------------------- the key table
def _keyed_sections() -> dict[str, type]:
  return {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


def _plain_key(section: str, field: dataclasses.Field) -> str:
  return f"{section}.{field.name}"


def key_table() -> dict[str, tuple[Any, bool]]:
  """Every config key → (default, required). The one table; `configs/common.py` derives from it."""
  table: dict[str, tuple[Any, bool]] = {}
  for cls in (RunConfig, *_keyed_sections().values()):
    for field in dataclasses.fields(cls):
      if "key" in field.metadata:
        table[field.metadata["key"]] = (field.default, field.metadata["required"])
  for section, cls in _PLAIN_SECTIONS.items():
    for field in dataclasses.fields(cls):
      key = _plain_key(section, field)
      table[key] = (field.default, key in _REQUIRED_PLAIN)
  return dict(sorted(table.items()))


def all_keys() -> list[str]:
  return list(key_table())


def _field_type(cls: type, field: dataclasses.Field) -> Any:
  hints = typing.get_type_hints(cls)
  return hints[field.name]


def _coerce(key: str, value: Any, annotation: Any) -> Any:
  """Checks and converts one value to its field's type; the error names the key."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    annotation = next(a for a in args if a is not type(None))
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if annotation is bool:
    if isinstance(value, bool):
      return value
    raise ValueError(f"config.{key}={value!r}: expected true or false")
  if annotation is int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
      raise ValueError(f"config.{key}={value!r}: expected a whole number")
    return int(value)
  if annotation is float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
      raise ValueError(f"config.{key}={value!r}: expected a number")
    return float(value)
  if annotation is str:
    if value is None:
      return ""
    if not isinstance(value, str):
      raise ValueError(f"config.{key}={value!r}: expected a string")
    return value
  if origin is tuple:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
      raise ValueError(f"config.{key}={value!r}: expected a list of names")
    return tuple(items)
  return value


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
  node: Any = tree
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      return _SENTINEL
    node = node[part]
  return node


def _read_keyed(cls: type, tree: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for field in dataclasses.fields(cls):
    if "key" not in field.metadata:
      continue
    key = field.metadata["key"]
    value = _lookup(tree, key)
    if value is _SENTINEL:
      if field.metadata["required"]:
        raise KeyError(f"config.{key} is missing (a required key; see configs/common.py)")
      continue
    out[field.name] = _coerce(key, value, _field_type(cls, field))
  return out


def _read_plain(section: str, cls: type, tree: dict[str, Any]) -> Any:
  node = tree.get(section, _SENTINEL)
  if node is _SENTINEL:
    if section == "model":
      raise KeyError("config.model is missing (a required key; see configs/common.py)")
    node = {}
  if not isinstance(node, dict):
    raise ValueError(f"config.{section} must be a group of keys, got {node!r}")
  kwargs = {}
  for field in dataclasses.fields(cls):
    key = _plain_key(section, field)
    if field.name not in node:
      if key in _REQUIRED_PLAIN:
        raise KeyError(f"config.{key} is missing (a required key; see configs/common.py)")
      continue
    kwargs[field.name] = _coerce(key, node[field.name], _field_type(cls, field))
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as error:
    raise ValueError(f"config.{section}: {error}") from error


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  plain = {f"{s}." for s in _PLAIN_SECTIONS}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and (name + ".") not in plain:
      flat.update(_flatten(value, name + "."))
    elif isinstance(value, dict):
      flat.update({f"{name}.{k}": v for k, v in value.items()})
    else:
      flat[name] = value
  return flat


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for dotted, value in flat.items():
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def _unknown_key_message(key: str) -> str:
  close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.6)
  hint = f"; did you mean {', '.join('config.' + c for c in close)}?" if close else ""
  section = key.split(".")[0]
  if section == "model":
    fields = sorted(f.name for f in dataclasses.fields(T5Config))
    hint += f" (config.model has unknown field(s) {[key.split('.', 1)[1]]}; T5Config has {fields})"
  return f"unknown config key config.{key}{hint}"


def to_flat_dict(rc: RunConfig) -> dict[str, Any]:
  """{config key: value} of a RunConfig (the inverse of `from_config_dict`)."""
  flat = {}
  for cls_value in (rc, rc.data, rc.train, rc.eval):
    for field in dataclasses.fields(cls_value):
      if "key" in field.metadata:
        flat[field.metadata["key"]] = getattr(cls_value, field.name)
  for section in _PLAIN_SECTIONS:
    value = getattr(rc, section)
    for field in dataclasses.fields(value):
      flat[_plain_key(section, field)] = getattr(value, field.name)
  return flat


def default_config_dict():
  """The ml_collections ConfigDict of every key at its default (`configs/common.base_config`).

  `None` defaults (e.g. model.num_decoder_layers) become typed placeholders so that
  `--config.model.num_decoder_layers=4` parses as an int.
  """
  import ml_collections
  from ml_collections import config_dict

  config = ml_collections.ConfigDict()
  for key, (default, _) in key_table().items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = config_dict.placeholder(int) if default is None else default
  return config


def resolve_data_dir(rc: RunConfig, environ: dict[str, str] | None = None) -> str:
  """`config.data_dir`, else env FLANJAX_DATA_DIR, else "" (the DESIGN.md contract)."""
  env = os.environ if environ is None else environ
  return rc.data.data_dir or env.get(DATA_DIR_ENV, "")
