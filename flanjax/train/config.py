"""`TrainConfig`: the frozen dataclass the training loop runs on, built from the ConfigDict.

Only `from_config` reads the ConfigDict (STYLE rule 2). Keys of the shared contract are required;
the optional keys below have defaults (one table, not `config.get` scattered through the loop).
Every error names the config key to fix and is raised before anything is compiled.

Example:
  >>> config = ml_collections.ConfigDict(dict(
  ...     seed=0, init_from="", model=dict(d_model=64), lengths=dict(inputs=32, targets=16),
  ...     train=dict(steps=10, batch_size=8, log_every=1, checkpoint_every=5, keep_checkpoints=2,
  ...                eval_every=0),
  ...     optimizer=dict(name="adafactor", learning_rate=1e-3, schedule="constant"),
  ...     mesh=dict(data=1, fsdp=-1, model=1)))
  >>> tc = TrainConfig.from_config(config)
  >>> tc.model.d_model, tc.optimizer.name, tc.num_microbatches
  (64, 'adafactor', 1)
  >>> tc.validate(num_devices=8, process_count=1)  # the resolved (data, fsdp, model) mesh
  (1, 8, 1)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from flanjax.model.config import T5Config
from flanjax.partitioning import MeshConfig
from flanjax.train.optim import OptimizerConfig

NON_FINITE_POLICIES = ("skip", "stop")

# key -> (default, TrainConfig / OptimizerConfig field). Keys absent from a config take the default.
OPTIONAL_KEYS: dict[str, Any] = {
  "train.microbatches": 1,
  "train.z_loss": 0.0,
  "train.label_smoothing": 0.0,
  "train.non_finite": "skip",
  "train.async_checkpoints": True,
  "train.peak_flops_per_device": 0.0,
  "optimizer.warmup_steps": 0,
  "optimizer.end_learning_rate": 0.0,
  "optimizer.grad_clip_norm": 1.0,
  "optimizer.weight_decay": 0.0,
  "init_from": "",
  "train.eval_every": 0,
}
_MISSING = object()


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
  node: Any = tree
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      if dotted in OPTIONAL_KEYS:
        return OPTIONAL_KEYS[dotted]
      raise KeyError(f"config.{dotted} is missing (required by the training loop)")
    node = node[part]
  return node


def _as_dict(config: Any) -> dict[str, Any]:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the loop needs, validated. Fields mirror the config keys (see OPTIONAL_KEYS)."""

  model: T5Config
  optimizer: OptimizerConfig
  mesh: MeshConfig
  seed: int
  steps: int
  batch_size: int
  input_length: int
  target_length: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  eval_every: int = 0
  num_microbatches: int = 1
  z_loss: float = 0.0
  label_smoothing: float = 0.0
  non_finite: str = "skip"  # "skip": drop the update and count it; "stop": save and raise
  async_checkpoints: bool = True
  peak_flops_per_device: float = 0.0  # 0: datasheet for known accelerators, else measured
  init_from: str = ""  # an HF checkpoint directory (or hub name); "" = random init

  @classmethod
  def from_config(cls, config: Any) -> TrainConfig:
    """Reads the ml_collections ConfigDict (or a plain nested dict) of the shared contract."""
    tree = _as_dict(config)
    model_fields = {f.name for f in dataclasses.fields(T5Config)}
    model_overrides = dict(_lookup(tree, "model"))
    unknown = sorted(set(model_overrides) - model_fields)
    if unknown:
      raise ValueError(
        f"config.model has unknown field(s) {unknown}; T5Config has {sorted(model_fields)}"
      )
    try:
      model = T5Config(**model_overrides)
      optimizer = OptimizerConfig(
        name=_lookup(tree, "optimizer.name"),
        learning_rate=float(_lookup(tree, "optimizer.learning_rate")),
        schedule=_lookup(tree, "optimizer.schedule"),
        warmup_steps=int(_lookup(tree, "optimizer.warmup_steps")),
        end_learning_rate=float(_lookup(tree, "optimizer.end_learning_rate")),
        grad_clip_norm=float(_lookup(tree, "optimizer.grad_clip_norm")),
        weight_decay=float(_lookup(tree, "optimizer.weight_decay")),
      )
    except (TypeError, ValueError) as error:
      raise ValueError(f"config: {error}") from error
    mesh = MeshConfig(
      data=int(_lookup(tree, "mesh.data")),
      fsdp=int(_lookup(tree, "mesh.fsdp")),
      model=int(_lookup(tree, "mesh.model")),
    )
    train_config = cls(
      model=model,
      optimizer=optimizer,
      mesh=mesh,
      seed=int(_lookup(tree, "seed")),
      steps=int(_lookup(tree, "train.steps")),
      batch_size=int(_lookup(tree, "train.batch_size")),
      input_length=int(_lookup(tree, "lengths.inputs")),
      target_length=int(_lookup(tree, "lengths.targets")),
      log_every=int(_lookup(tree, "train.log_every")),
      checkpoint_every=int(_lookup(tree, "train.checkpoint_every")),
      keep_checkpoints=int(_lookup(tree, "train.keep_checkpoints")),
      eval_every=int(_lookup(tree, "train.eval_every") or 0),
      num_microbatches=int(_lookup(tree, "train.microbatches")),
      z_loss=float(_lookup(tree, "train.z_loss")),
      label_smoothing=float(_lookup(tree, "train.label_smoothing")),
      non_finite=str(_lookup(tree, "train.non_finite")),
      async_checkpoints=bool(_lookup(tree, "train.async_checkpoints")),
      peak_flops_per_device=float(_lookup(tree, "train.peak_flops_per_device")),
      init_from=str(_lookup(tree, "init_from") or ""),
    )
    train_config.check_values()
    return train_config

  def check_values(self) -> None:
    """Device-independent checks; each error names its config key."""
    positive = {
      "train.steps": self.steps,
      "train.batch_size": self.batch_size,
      "lengths.inputs": self.input_length,
      "lengths.targets": self.target_length,
      "train.log_every": self.log_every,
      "train.microbatches": self.num_microbatches,
      "train.keep_checkpoints": self.keep_checkpoints,
    }
    for key, value in positive.items():
      if value <= 0:
        raise ValueError(f"config.{key}={value} must be positive")
    for key, value in {
      "train.checkpoint_every": self.checkpoint_every,
      "train.eval_every": self.eval_every,
    }.items():
      if value < 0:
        raise ValueError(f"config.{key}={value} must be >= 0 (0 = off)")
    if self.non_finite not in NON_FINITE_POLICIES:
      raise ValueError(
        f"config.train.non_finite={self.non_finite!r} is not one of {NON_FINITE_POLICIES}"
      )
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"config.train.label_smoothing={self.label_smoothing} must be in [0, 1)")
    if self.batch_size % self.num_microbatches:
      raise ValueError(
        f"config.train.batch_size={self.batch_size} is not divisible by "
        f"config.train.microbatches={self.num_microbatches}"
      )
    self.check_init_from()

  def check_init_from(self) -> None:
    """`init_from` must be a directory with config.json, or a hub name (not a missing path)."""
    path = os.path.expanduser(self.init_from)
    if not path:
      return
    if os.path.isdir(path):
      if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
          f"config.init_from={self.init_from!r} is a directory without "
          "config.json (expected an HF T5 checkpoint directory)"
        )
    elif os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
      raise ValueError(
        f"config.init_from={self.init_from!r} does not exist (expected an HF T5 "
        "checkpoint directory or a hub name like google/flan-t5-small)"
      )

  def validate(self, num_devices: int, process_count: int) -> tuple[int, int, int]:
    """Checks that depend on the devices; returns the resolved (data, fsdp, model) mesh shape."""
    shape = self.mesh.resolve(num_devices)
    batch_shards = shape[0] * shape[1]
    if self.batch_size % batch_shards:
      raise ValueError(
        f"config.train.batch_size={self.batch_size} is not divisible by the "
        f"batch shards mesh.data x mesh.fsdp = {shape[0]} x {shape[1]}"
      )
    if self.batch_size % process_count:
      raise ValueError(
        f"config.train.batch_size={self.batch_size} is not divisible by {process_count} processes"
      )
    micro_rows = self.batch_size // self.num_microbatches
    if micro_rows % batch_shards:
      raise ValueError(
        f"config.train.microbatches={self.num_microbatches}: microbatches of "
        f"{micro_rows} rows do not divide over {batch_shards} batch shards "
        "(mesh.data x mesh.fsdp)"
      )
    return shape

  def to_json_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# Fields of T5Config that decide parameter shapes: a checkpoint must agree on all of them.
SHAPE_FIELDS = (
  "vocab_size",
  "d_model",
  "d_kv",
  "d_ff",
  "num_layers",
  "num_decoder_layers",
  "num_heads",
  "relative_attention_num_buckets",
  "feed_forward_proj",
  "tie_word_embeddings",
)


def model_shape(model: T5Config) -> dict[str, Any]:
  return {name: getattr(model, name) for name in SHAPE_FIELDS}
