"""HF checkpoint interop: round trips both ways and clear errors for bad directories."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers

from flanjax.model import hf
from flanjax.model.config import T5Config
from tests.model.conftest import V10, V11, hf_model


def _inputs(config):
  rng = np.random.default_rng(0)
  return rng.integers(2, config.vocab_size, (2, 7)), rng.integers(2, config.vocab_size, (2, 5))


@pytest.mark.parametrize("config", [V10, V11], ids=["v1.0", "v1.1"])
@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scan"])
def test_flanjax_to_hf_round_trip(config, scan_layers, tmp_path):
  model = hf.T5Model.init(config.replace(scan_layers=scan_layers), seed=4)
  hf.save_pretrained(model, tmp_path / "out")
  reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
  enc, dec = _inputs(config)
  dec[:, 0] = 0
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec)).logits
  np.testing.assert_allclose(np.asarray(model.logits(enc, dec)), theirs.numpy(), atol=1e-4)
  # And back: flanjax reads its own export to identical parameters.
  again = hf.load_pretrained(tmp_path / "out", scan_layers=scan_layers)
  assert again.config == model.config
  jax.tree.map(np.testing.assert_array_equal, again.params, model.params)
  np.testing.assert_array_equal(
    np.asarray(again.logits(enc, dec)), np.asarray(model.logits(enc, dec))
  )
  if scan_layers:  # the export is the same model as the unscanned one of the same seed
    plain = hf.T5Model.init(config, seed=4)
    jax.tree.map(
      np.testing.assert_array_equal, hf.load_pretrained(tmp_path / "out").params, plain.params
    )


def test_load_pretrained_rejects_unknown_options(tmp_path):
  with pytest.raises(TypeError, match="unknown options.*'d_model'"):
    hf.load_pretrained(_write_checkpoint(tmp_path), d_model=8)


def test_sharded_and_pickled_checkpoints_load(tmp_path):
  reference = hf_model(V11)
  reference.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  assert (tmp_path / "sharded" / hf.SAFETENSORS_INDEX).exists()
  reference.save_pretrained(
    tmp_path / "pickled", safe_serialization=False
  ) if _accepts_safe() else _save_bin(reference, tmp_path / "pickled")
  enc, dec = _inputs(V11)
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec)).logits
  for name in ("sharded", "pickled"):
    ours = hf.load_pretrained(tmp_path / name).logits(enc, dec)
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4)


def _accepts_safe():
  import inspect

  return (
    "safe_serialization"
    in inspect.signature(transformers.PreTrainedModel.save_pretrained).parameters
  )


def _save_bin(reference, directory):
  directory.mkdir()
  state = {k: v.contiguous() for k, v in reference.state_dict().items()}
  torch.save(state, directory / hf.TORCH_FILE)
  (directory / hf.CONFIG_FILE).write_text(json.dumps(reference.config.to_dict()))


def _write_checkpoint(tmp_path, config=V11):
  hf.save_pretrained(hf.T5Model.init(config), tmp_path)
  return tmp_path


def test_missing_config_is_named(tmp_path):
  with pytest.raises(hf.CheckpointError, match="config.json is missing"):
    hf.load_pretrained(tmp_path)


def test_other_architecture_is_refused(tmp_path):
  (tmp_path / "config.json").write_text(
    json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
  )
  with pytest.raises(hf.CheckpointError, match="model_type='bert'"):
    hf.load_pretrained(tmp_path)


def test_missing_weights_file_is_named(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(V11.to_hf_config()))
  with pytest.raises(hf.CheckpointError, match="has no weights"):
    hf.load_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path):
  from safetensors.numpy import load_file, save_file

  path = _write_checkpoint(tmp_path) / hf.SAFETENSORS_FILE
  tensors = load_file(path)
  del tensors["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
  save_file(tensors, path)
  with pytest.raises(
    hf.CheckpointError, match=r"decoder\.block\.1\.layer\.2\.DenseReluDense\.wo\.weight.*missing"
  ):
    hf.load_pretrained(tmp_path)


def test_wrong_shape_is_named(tmp_path):
  config = json.loads((_write_checkpoint(tmp_path) / "config.json").read_text())
  config["d_ff"] = 99
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(hf.CheckpointError, match=r"model\.safetensors: tensor .*wi_0.* has shape"):
    hf.load_pretrained(tmp_path)


def test_not_a_directory(tmp_path):
  with pytest.raises(hf.CheckpointError, match="not a directory"):
    hf.load_pretrained(tmp_path / "nowhere")


def test_transformers5_tied_export_of_untied_model_loads(tmp_path):
  """transformers 5 writes tie_word_embeddings=true + scale_decoder_outputs=false for v1.1."""
  reference = hf_model(V11)
  with torch.no_grad():
    reference.lm_head.weight.copy_(reference.shared.weight)  # an exactly tied v1.1 head
  reference.save_pretrained(tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  model = hf.load_pretrained(tmp_path)
  assert model.config.tie_word_embeddings == bool(saved.get("scale_decoder_outputs", False))
  enc, dec = _inputs(V11)
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec)).logits
  np.testing.assert_allclose(np.asarray(model.logits(enc, dec)), theirs.numpy(), atol=1e-4)


def test_bfloat16_load(tmp_path):
  model = hf.load_pretrained(_write_checkpoint(tmp_path), dtype="bfloat16")
  assert model.config.dtype == "bfloat16"
  leaves = [x.dtype.name for x in __import__("jax").tree_util.tree_leaves(model.params)]
  assert set(leaves) == {"bfloat16"}
  assert isinstance(model.config, T5Config)


def test_a_truncated_safetensors_file_is_one_line_naming_it(tmp_path):
  from flanjax.model import hf as hf_lib
  from flanjax.model.config import T5Config

  config = T5Config.tiny(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
  hf_lib.save_pretrained(hf_lib.T5Model.init(config), tmp_path)
  weights = tmp_path / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
  with pytest.raises(hf_lib.CheckpointError, match="model.safetensors is not a readable") as info:
    hf_lib.load_pretrained(tmp_path)
  assert "\n" not in str(info.value) and str(weights) in str(info.value)
