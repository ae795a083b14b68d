"""Helpers for config files; every file in configs/ starts from `base_config()`.

The table of keys and defaults is `flanjax/config.py` (the dataclass defaults of `RunConfig`):
`base_config()` is built from it, so a config file can only set keys that table has, and the
defaults cannot disagree (tests/test_config.py loads every config file through the reader).
Keys (DESIGN.md): seed, data_dir, model.* (T5Config fields), init_from, mixture, eval_mixtures,
lengths.inputs, lengths.targets, train.*, optimizer.*, mesh.*; plus vocab, toy_vocab and eval.*.
"""

import ml_collections

from flanjax.config import default_config_dict


def model_config(**overrides) -> ml_collections.ConfigDict:
  """`model.*`: every T5Config field at its default, with `overrides` applied."""
  model = default_config_dict().model
  for name, value in overrides.items():
    if name not in model:
      raise KeyError(f"model.{name} is not a T5Config field")
    model[name] = value
  return model


def base_config() -> ml_collections.ConfigDict:
  """Every key of `flanjax.config.key_table()` at its default."""
  return default_config_dict()


# FLAN-T5 / T5 v1.1 shapes (HF google/flan-t5-* and google/t5-v1_1-*), gated-GELU, untied head.
T5_V11_SHAPES = {
  "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
  "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
  "large": dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
  "xl": dict(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
  "xxl": dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
}
# Microbatches (gradient accumulation) at batch 64, 2048/512: the fewest with which `plan` finds
# the train step within 90% of a TPU v4 chip's HBM on the config's `Fits:` topology (xl: 2 would
# use 90.5%). xxl on 8 chips cannot take more than 8 (one row per chip per microbatch). See each
# config's `Fits:` line and the README's plan table.
FLAN_T5_MICROBATCHES = {"small": 1, "base": 1, "large": 1, "xl": 4, "xxl": 8}
# Fine-tuning steps of the FLAN-T5 paper (Chung et al. 2022).
FLAN_T5_STEPS = {"small": 98_000, "base": 84_000, "large": 64_000, "xl": 38_000, "xxl": 14_000}


def flan_t5_config(size: str, heldout: str = "summarization") -> ml_collections.ConfigDict:
  """FLAN-T5 recipe on flan_mini: Adafactor, constant LR 1e-3, packing, 2048/512 lengths."""
  c = base_config()
  c.init_from = f"google/flan-t5-{size}"  # or google/t5-v1_1-{size}, or a local HF directory
  c.mixture = f"flan_mini_holdout_{heldout}"
  c.eval_mixtures = ("flan_mini",)
  c.model = model_config(
    vocab_size=32128,
    dropout_rate=0.05,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    dtype="bfloat16",
    # Pod-scale execution: layers as one nn.scan each (compile time flat in depth), rematerialised
    # (only each layer's input is kept for the backward pass), Pallas flash attention on TPU.
    scan_layers=True,
    remat="full",
    attention="flash",
    **T5_V11_SHAPES[size],
  )
  c.lengths.inputs, c.lengths.targets = 2048, 512
  c.train.update(
    steps=FLAN_T5_STEPS[size],
    batch_size=64,
    log_every=100,
    checkpoint_every=2000,
    keep_checkpoints=3,
    eval_every=5000,
    z_loss=1e-4,
    microbatches=FLAN_T5_MICROBATCHES[size],
  )
  c.optimizer.update(name="adafactor", learning_rate=1e-3, schedule="constant", warmup_steps=0)
  c.mesh.update(data=1, fsdp=-1, model=1)  # FSDP over every chip of the slice / GPU host
  c.eval.update(split="test", max_examples=500, batch_size=64)
  return c
