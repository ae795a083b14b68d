"""Tiny random HF PyTorch T5 models as the reference, built on the fly (nothing downloaded)."""

import pytest

from flanjax.model.config import T5Config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V10 = T5Config(
  vocab_size=96,
  d_model=32,
  d_kv=8,
  d_ff=64,
  num_layers=2,
  num_decoder_layers=3,
  num_heads=4,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=20,
  dropout_rate=0.0,
  feed_forward_proj="relu",
  tie_word_embeddings=True,
)
# v1.1 / FLAN-T5 style, with a head size (d_kv=6) unrelated to d_model / num_heads.
V11 = T5Config(
  vocab_size=100,
  d_model=40,
  d_kv=6,
  d_ff=56,
  num_layers=3,
  num_decoder_layers=2,
  num_heads=5,
  relative_attention_num_buckets=16,
  relative_attention_max_distance=32,
  dropout_rate=0.0,
  feed_forward_proj="gated-gelu",
  tie_word_embeddings=False,
)


def hf_model(config: T5Config, seed: int = 0):
  """A random `T5ForConditionalGeneration` of the same shape, in eval mode."""
  torch.manual_seed(seed)
  hf_config = transformers.T5Config(**config.to_hf_config())
  model = transformers.T5ForConditionalGeneration(hf_config).eval()
  if not config.tie_word_embeddings:
    with torch.no_grad():  # make the untied head really differ from the embedding
      model.lm_head.weight.normal_(0.0, config.d_model**-0.5)
  return model


@pytest.fixture(params=["v1.0", "v1.1", "v1.0-scan", "v1.1-scan"])
def pair(request, tmp_path):
  """(flanjax T5Model, HF model) holding the same weights, loaded through load_pretrained;
  "-scan": with scan_layers=True (stacked parameters)."""
  from flanjax.model import hf

  version, _, scan = request.param.partition("-")
  config = {"v1.0": V10, "v1.1": V11}[version]
  reference = hf_model(config)
  reference.save_pretrained(tmp_path / "hf")
  model = hf.load_pretrained(tmp_path / "hf", scan_layers=bool(scan))
  assert ("encoder_layers" in model.params) == bool(scan)
  return model, reference
