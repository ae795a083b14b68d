"""Cached decoding against HF PyTorch `generate` (greedy and 4-beam), sampling, and buckets."""

import numpy as np
import pytest
import torch

from flanjax.model import decode, hf
from tests.model.conftest import V10, V11, hf_model


def _eos_prone_pair(config, tmp_path, scan_layers=False):
  """A reference model whose EOS row copies (×1.05) its favourite token, so rows end at various
  lengths and the EOS paths of the search are exercised; plus the same weights in flanjax."""
  reference = hf_model(config)
  enc = np.random.default_rng(0).integers(2, config.vocab_size, (6, 9))
  with torch.no_grad():
    greedy = reference.generate(
      input_ids=torch.tensor(enc), max_new_tokens=10, do_sample=False, use_cache=False
    ).numpy()
    favourite = np.bincount(greedy[:, 1:].ravel()).argmax()
    reference.lm_head.weight[config.eos_token_id] = 1.05 * reference.lm_head.weight[favourite]
  reference.save_pretrained(tmp_path / "hf")
  return hf.load_pretrained(tmp_path / "hf", scan_layers=scan_layers), reference


def _hf_generate(reference, enc, mask, **kwargs):
  with torch.no_grad():
    # use_cache=False: transformers 5's cache breaks when the decoder is deeper (DESIGN.md).
    out = reference.generate(
      input_ids=torch.tensor(enc),
      attention_mask=torch.tensor(mask),
      do_sample=False,
      use_cache=False,
      **kwargs,
    ).numpy()[:, 1:]
  # HF pads finished beams with EOS (its fill is `pad_token_id or eos`, and pad is 0); flanjax
  # pads with 0 after the first EOS, as documented.
  return np.asarray(decode._first_eos_trim(out, 1, 0))


def _inputs(config):
  rng = np.random.default_rng(0)
  enc = rng.integers(2, config.vocab_size, (6, 9))
  mask = np.ones_like(enc)
  enc[4, 5:], mask[4, 5:] = 0, 0  # a padded row
  return enc, mask


@pytest.mark.parametrize(
  "config, num_beams, scan_layers",
  [
    pytest.param(V10, 1, False, id="v1.0-greedy"),
    pytest.param(V10, 4, False, id="v1.0-beam"),
    pytest.param(V11, 1, False, id="v1.1-greedy"),
    pytest.param(V11, 4, False, id="v1.1-beam"),
    # Scanned (stacked parameters, unstacked inside the decoding program): greedy and beam.
    pytest.param(V10, 1, True, id="v1.0-greedy-scan"),
    pytest.param(V11, 4, True, id="v1.1-beam-scan"),
  ],
)
def test_generate_matches_hf(config, num_beams, scan_layers, tmp_path):
  model, reference = _eos_prone_pair(config, tmp_path, scan_layers)
  enc, mask = _inputs(config)
  ours = model.generate(enc, mask, max_new_tokens=10, num_beams=num_beams)
  theirs = _hf_generate(reference, enc, mask, max_new_tokens=10, num_beams=num_beams)
  np.testing.assert_array_equal(ours, theirs)
  ended = (ours == config.eos_token_id).any(axis=1)
  assert ended.any(), "the test model should end some rows with EOS"


def test_top_k_one_sampling_is_greedy_and_seeds_matter():
  model = hf.T5Model.init(V11, seed=1)
  enc, mask = _inputs(V11)
  greedy = model.generate(enc, mask, max_new_tokens=8)
  top1 = model.generate(enc, mask, max_new_tokens=8, do_sample=True, top_k=1, temperature=0.7)
  np.testing.assert_array_equal(greedy, top1)
  hot_a = model.generate(enc, mask, max_new_tokens=8, do_sample=True, temperature=5.0, seed=1)
  hot_b = model.generate(enc, mask, max_new_tokens=8, do_sample=True, temperature=5.0, seed=2)
  again = model.generate(enc, mask, max_new_tokens=8, do_sample=True, temperature=5.0, seed=1)
  np.testing.assert_array_equal(hot_a, again)
  assert (hot_a != hot_b).any()


def test_top_k_sampling_stays_in_top_k():
  model = hf.T5Model.init(V11, seed=2)
  enc, mask = _inputs(V11)
  first = model.generate(enc, mask, max_new_tokens=1, do_sample=True, top_k=3, temperature=3.0)
  start = np.zeros((enc.shape[0], 1), np.int32)
  logits = np.asarray(model.logits(enc, start, mask))[:, 0]
  top3 = np.argsort(-logits, axis=-1)[:, :3]
  assert all(first[i, 0] in top3[i] for i in range(enc.shape[0]))


def test_similar_shapes_share_one_compilation():
  # A config no other test uses, so every compilation counted here is this test's own.
  model = hf.T5Model.init(V11.replace(layer_norm_epsilon=1e-5), seed=0)
  rng = np.random.default_rng(0)
  before = decode._decode._cache_size()
  model.generate(rng.integers(2, 50, (3, 9)), max_new_tokens=5)
  assert decode._decode._cache_size() == before + 1
  before += 1
  model.generate(rng.integers(2, 50, (4, 12)), max_new_tokens=7)  # same buckets: 4 × 16, cache 8
  assert decode._decode._cache_size() == before
  model.generate(rng.integers(2, 50, (5, 12)), max_new_tokens=7)  # batch bucket 8: one more
  assert decode._decode._cache_size() == before + 1


def test_bucket():
  assert [decode.bucket(n) for n in (1, 5, 8, 9, 200)] == [8, 8, 8, 16, 256]
  assert decode.bucket(3, 1) == 4


def test_generate_rejects_bad_arguments():
  model = hf.T5Model.init(V11)
  with pytest.raises(ValueError, match="max_new_tokens"):
    model.generate(np.ones((1, 3)), max_new_tokens=0)
  with pytest.raises(ValueError, match="input_ids"):
    model.generate(np.ones(3), max_new_tokens=2)
