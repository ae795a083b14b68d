"""Training FLOPs of a T5 step (for MFU) and the peak the hardware reaches.

FLOPs of one training step (forward + backward = 3 x forward, a matmul of an [m, k] by a [k, n]
matrix costs 2mkn), for B sequences of input length L_in and target length L_tgt:

    6 * B * (N_enc * L_in + (N_dec + N_head) * L_tgt)                       matmuls with weights
  + 12 * B * inner * (layers_enc * L_in^2                                 encoder self-attention
                      + layers_dec * (L_tgt^2 + L_tgt * L_in))            decoder self + cross

where inner = heads * d_kv; N_enc / N_dec count the weight-matrix parameters of the encoder /
decoder layers (attention q, k, v, o; the MLP's wi (two of them when gated) and wo; cross-attention
in the decoder), N_head = d_model * vocab is the LM head, and embedding lookups, norms and relative
position biases are excluded (they are not matmuls). The attention term is QK^T plus AV
(2 matmuls x 2 FLOPs x 3 for fwd+bwd = 12 per query-key pair per inner dimension), counted dense
(no saving for causal masking or padding), as MaxText and t5x do. `6 * N * (L_in + L_tgt)`
would overstate an encoder-decoder by about 2x, because each token passes through one stack only.

Example (T5-small-like, relu, d_model 512, d_ff 2048, 6 + 6 layers, vocab 32128):
  >>> cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
  >>> encoder_matmul_params(cfg), decoder_matmul_params(cfg), cfg.d_model * cfg.vocab_size
  (18874368, 25165824, 16449536)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Dense bf16 peaks per chip, by jax `device_kind` prefix (the sparse figures are twice these).
KNOWN_PEAK_FLOPS = {
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA A100": 312e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
}


def _attention_params(cfg) -> int:
  return 4 * cfg.d_model * cfg.num_heads * cfg.d_kv  # q, k, v, o


def _mlp_params(cfg) -> int:
  return (3 if cfg.is_gated else 2) * cfg.d_model * cfg.d_ff


def encoder_matmul_params(cfg) -> int:
  return cfg.num_layers * (_attention_params(cfg) + _mlp_params(cfg))


def decoder_matmul_params(cfg) -> int:
  return cfg.num_decoder_layers * (2 * _attention_params(cfg) + _mlp_params(cfg))


def train_flops_per_sequence(cfg, input_length: int, target_length: int) -> float:
  """Training FLOPs (forward + backward) for one sequence pair; see the module docstring."""
  head = cfg.d_model * cfg.vocab_size
  weights = 6 * (
    encoder_matmul_params(cfg) * input_length + (decoder_matmul_params(cfg) + head) * target_length
  )
  inner = cfg.num_heads * cfg.d_kv
  attention = (
    12
    * inner
    * (
      cfg.num_layers * input_length**2
      + cfg.num_decoder_layers * (target_length**2 + target_length * input_length)
    )
  )
  return float(weights + attention)


def measure_matmul_peak_flops(size: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
  """FLOP/s of the best of `repeats` [size, size] @ [size, size] matmuls on the default device.

  Through the same framework as the workload, so MFU compares like with like (on CPU, JAX's
  f32 matmul is several times faster than PyTorch's, DESIGN.md).
  """
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (size, size), dtype)
  b = jax.random.normal(key_b, (size, size), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


def peak_flops_per_device(measure_size: int = 1024) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the figure came from)."""
  kind = jax.devices()[0].device_kind
  for prefix, peak in KNOWN_PEAK_FLOPS.items():
    if kind.startswith(prefix):
      return peak, f"datasheet dense bf16 ({kind})"
  return measure_matmul_peak_flops(measure_size), f"measured f32 {measure_size}^3 matmul ({kind})"
