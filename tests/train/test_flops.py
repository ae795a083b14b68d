"""The encoder-decoder FLOP count used for MFU."""

import pytest

from flanjax.model.config import T5Config
from flanjax.train import flops


def test_matmul_parameter_counts_of_t5_small():
  cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
  assert flops.encoder_matmul_params(cfg) == 6 * (4 * 512 * 512 + 2 * 512 * 2048)
  assert flops.decoder_matmul_params(cfg) == 6 * (8 * 512 * 512 + 2 * 512 * 2048)


def test_train_flops_formula_by_hand():
  cfg = T5Config(
    vocab_size=100,
    d_model=8,
    d_kv=2,
    d_ff=16,
    num_layers=1,
    num_heads=2,
    feed_forward_proj="gated-gelu",
  )
  inner = 4
  encoder = 4 * 8 * inner + 3 * 8 * 16
  decoder = 8 * 8 * inner + 3 * 8 * 16
  weights = 6 * (encoder * 10 + (decoder + 8 * 100) * 5)
  attention = 12 * inner * (10 * 10 + 5 * 5 + 5 * 10)
  assert flops.train_flops_per_sequence(cfg, 10, 5) == weights + attention


def test_measured_peak_is_positive():
  assert flops.measure_matmul_peak_flops(size=128, repeats=2) > 1e6
  peak, source = flops.peak_flops_per_device(measure_size=128)
  assert peak > 0 and source
  assert flops.KNOWN_PEAK_FLOPS["NVIDIA H200"] == pytest.approx(989e12)
