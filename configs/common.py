"""The one table of config keys and defaults; every file in configs/ starts from `base_config()`.

Keys (DESIGN.md): seed, data_dir, model.* (T5Config fields), init_from, mixture, eval_mixtures,
lengths.inputs, lengths.targets, train.*, optimizer.*, mesh.*; plus vocab and eval.* here.
"""

import dataclasses

import ml_collections
from ml_collections import config_dict

from flanjax.model.config import T5Config


def model_config(**overrides) -> ml_collections.ConfigDict:
  """`model.*`: every T5Config field, so any of them can be overridden from the command line."""
  fields = {f.name: f.default for f in dataclasses.fields(T5Config)}
  fields.update(overrides)
  model = ml_collections.ConfigDict()
  for name, value in fields.items():
    # None defaults become typed placeholders so `--config.model.num_decoder_layers=4` works.
    model[name] = config_dict.placeholder(int) if value is None else value
  return model


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data_dir = ""  # "" → env FLANJAX_DATA_DIR
  c.vocab = ""  # SentencePiece model path; "" → init_from's spiece.model, else the tasks' default
  c.init_from = ""  # HF T5 directory or hub name; "" → random init
  c.mixture = "toy"
  c.eval_mixtures = ("toy",)
  c.model = model_config()

  c.lengths = ml_collections.ConfigDict(dict(inputs=512, targets=128))
  c.train = ml_collections.ConfigDict(
    dict(
      steps=1000,
      batch_size=32,
      log_every=50,
      checkpoint_every=500,
      keep_checkpoints=3,
      eval_every=0,
      microbatches=1,
      z_loss=1e-4,
      label_smoothing=0.0,
      non_finite="skip",
      async_checkpoints=True,
      peak_flops_per_device=0.0,
      pack=True,
    )
  )
  c.optimizer = ml_collections.ConfigDict(
    dict(
      name="adafactor",
      learning_rate=1e-3,
      schedule="constant",
      warmup_steps=0,
      end_learning_rate=0.0,
      grad_clip_norm=1.0,
      weight_decay=0.0,
    )
  )
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, model=1))
  c.eval = ml_collections.ConfigDict(
    dict(
      split="test",
      selection_split="validation",
      max_examples=0,
      batch_size=32,
      num_beams=1,
      length_normalize=False,
    )
  )
  return c


# FLAN-T5 / T5 v1.1 shapes (HF google/flan-t5-* and google/t5-v1_1-*), gated-GELU, untied head.
T5_V11_SHAPES = {
  "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
  "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
  "large": dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
}
# Fine-tuning steps of the FLAN-T5 paper (Chung et al. 2022).
FLAN_T5_STEPS = {"small": 98_000, "base": 84_000, "large": 64_000}


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
  )
  c.optimizer.update(name="adafactor", learning_rate=1e-3, schedule="constant", warmup_steps=0)
  c.mesh.update(data=1, fsdp=-1, model=1)  # FSDP over every chip of a TPU v4-8 / 8-GPU host
  c.eval.update(split="test", max_examples=500, batch_size=64)
  return c
