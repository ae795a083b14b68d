"""T5 model configuration: one frozen dataclass for T5 v1.0 and v1.1 / FLAN-T5.

The model never sees an ml_collections ConfigDict; configs build a `T5Config` and pass it down.

Example:
  >>> cfg = T5Config.tiny()
  >>> cfg.d_model, cfg.is_gated
  (64, True)
  >>> T5Config.from_hf_config(cfg.to_hf_config()) == cfg
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any

_FEED_FORWARD = ("relu", "gated-gelu", "gated-relu", "gelu")
REMAT_CHOICES = ("none", "full", "dots")
ATTENTION_CHOICES = ("xla", "flash")
# Fields that change how the model runs (memory, compile time, kernels), never its parameter values
# or numerics beyond float rounding; `hf.load_pretrained` accepts them as overrides.
EXECUTION_FIELDS = ("remat", "scan_layers", "attention")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shape and numerics of a T5 encoder-decoder.

  v1.0 (t5-small ...): feed_forward_proj="relu", tie_word_embeddings=True (the decoder output is
  rescaled by d_model**-0.5 before the shared embedding is used as the LM head).
  v1.1 / FLAN-T5: feed_forward_proj="gated-gelu", tie_word_embeddings=False.

  Execution options (same function, different memory / compile time / kernels):
    remat: "none" keeps every activation for the backward pass; "full" recomputes each encoder /
      decoder layer in the backward pass (saves only its input); "dots" saves the layer's
      weight matmuls (those without batch dimensions: every projection and MLP matmul) and
      recomputes the rest, notably the [batch, heads, q, k] attention scores.
    scan_layers: each stack is one `nn.scan` over parameters stacked on a leading "layers" axis
      (compile time flat in depth). `t5.stack_layers` / `t5.unstack_layers` convert trees.
    attention: "xla" (plain einsums) or "flash": the Pallas TPU flash kernel (interpreted on CPU,
      cuDNN fused attention on GPU for bf16/f16); see `flanjax.model.attention`.
  """

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 2048
  num_layers: int = 6
  num_decoder_layers: int | None = None  # None: same as num_layers.
  num_heads: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.1
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"
  tie_word_embeddings: bool = True
  dtype: str = "float32"  # compute dtype of activations
  param_dtype: str = "float32"
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  remat: str = "none"  # "none" | "full" | "dots"
  scan_layers: bool = False
  attention: str = "xla"  # "xla" | "flash"

  def __post_init__(self):
    if self.remat not in REMAT_CHOICES:
      raise ValueError(f"T5Config.remat={self.remat!r}; expected one of {REMAT_CHOICES}")
    if self.attention not in ATTENTION_CHOICES:
      raise ValueError(
        f"T5Config.attention={self.attention!r}; expected one of {ATTENTION_CHOICES}"
      )
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"T5Config.scan_layers={self.scan_layers!r}; expected True or False")
    if self.feed_forward_proj not in _FEED_FORWARD:
      raise ValueError(
        f"T5Config.feed_forward_proj={self.feed_forward_proj!r}; expected one of {_FEED_FORWARD}"
      )
    for name in (
      "vocab_size",
      "d_model",
      "d_kv",
      "d_ff",
      "num_layers",
      "num_heads",
      "relative_attention_num_buckets",
      "relative_attention_max_distance",
    ):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)!r}")
    if self.num_decoder_layers is None:
      object.__setattr__(self, "num_decoder_layers", self.num_layers)
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(
          f"T5Config.{name}={getattr(self, name)!r}; expected float32, bfloat16 or float16"
        )

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    return self.feed_forward_proj.split("-")[-1]

  def replace(self, **changes) -> T5Config:
    return dataclasses.replace(self, **changes)

  # ---------------------------------------------------------------- HF interop
  @classmethod
  def from_hf_config(cls, hf: dict[str, Any] | Any, **overrides) -> T5Config:
    """From a HF `T5Config` object or its `config.json` dict."""
    d = hf if isinstance(hf, dict) else hf.to_dict()
    ff = d.get("feed_forward_proj", "relu")
    if ff == "gated-gelu_new":  # some exported configs spell it this way
      ff = "gated-gelu"
    kwargs = dict(
      vocab_size=d["vocab_size"],
      d_model=d["d_model"],
      d_kv=d["d_kv"],
      d_ff=d["d_ff"],
      num_layers=d["num_layers"],
      num_decoder_layers=d.get("num_decoder_layers") or d["num_layers"],
      num_heads=d["num_heads"],
      relative_attention_num_buckets=d.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=d.get("relative_attention_max_distance", 128),
      dropout_rate=d.get("dropout_rate", 0.1),
      layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-6),
      feed_forward_proj=ff,
      tie_word_embeddings=d.get("tie_word_embeddings", True),
      pad_token_id=d.get("pad_token_id", 0) if d.get("pad_token_id") is not None else 0,
      eos_token_id=d.get("eos_token_id", 1) if d.get("eos_token_id") is not None else 1,
      decoder_start_token_id=(
        d.get("decoder_start_token_id") if d.get("decoder_start_token_id") is not None else 0
      ),
    )
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf_config(self) -> dict[str, Any]:
    """The `config.json` dict that `transformers.T5Config(**d)` accepts."""
    return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "vocab_size": self.vocab_size,
      "d_model": self.d_model,
      "d_kv": self.d_kv,
      "d_ff": self.d_ff,
      "num_layers": self.num_layers,
      "num_decoder_layers": self.num_decoder_layers,
      "num_heads": self.num_heads,
      "relative_attention_num_buckets": self.relative_attention_num_buckets,
      "relative_attention_max_distance": self.relative_attention_max_distance,
      "dropout_rate": self.dropout_rate,
      "layer_norm_epsilon": self.layer_norm_epsilon,
      "feed_forward_proj": self.feed_forward_proj,
      "tie_word_embeddings": self.tie_word_embeddings,
      "is_encoder_decoder": True,
      "pad_token_id": self.pad_token_id,
      "eos_token_id": self.eos_token_id,
      "decoder_start_token_id": self.decoder_start_token_id,
      "initializer_factor": 1.0,
    }

  # ---------------------------------------------------------------- presets
  @classmethod
  def tiny(cls, **overrides) -> T5Config:
    """A few-hundred-thousand-parameter gated-GELU T5 for tests and the CPU demo."""
    base = dict(
      vocab_size=512,
      d_model=64,
      d_kv=16,
      d_ff=128,
      num_layers=2,
      num_heads=4,
      relative_attention_num_buckets=32,
      relative_attention_max_distance=128,
      dropout_rate=0.0,
      feed_forward_proj="gated-gelu",
      tie_word_embeddings=False,
    )
    base.update(overrides)
    return cls(**base)
