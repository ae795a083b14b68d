"""Sharded state construction, including `init_from` an HF checkpoint directory."""

import jax
import numpy as np
import pytest

from flanjax import partitioning
from flanjax.model import hf, t5
from flanjax.train import loop, state
from flanjax.train.optim import OptimizerConfig, make_optimizer
from flanjax.train.state import create_train_state
from flanjax.train.synthetic import SyntheticTask
from tests.train.helpers import read_metrics, run_config, tiny_config


def test_state_is_built_with_its_shardings():
  tc = run_config(tiny_config())
  mesh = partitioning.make_mesh(tc.mesh)
  state, shardings = create_train_state(
    init_fn=lambda rng: t5.init_params(tc.model, rng),
    logical_specs=t5.param_logical_axes(tc.model),
    optimizer=make_optimizer(OptimizerConfig(), 10),
    mesh=mesh,
    seed=0,
  )
  assert int(state.step) == 0 and int(state.non_finite_skips) == 0
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True):
    assert leaf.sharding == sharding
  embedding = state.params["token_embedder"]["embedding"]
  assert embedding.shape == (64, 32) and embedding.dtype == np.float32


def test_init_from_hf_directory_starts_from_those_weights(tmp_path):
  config = tiny_config(steps=1)
  model_config = run_config(config).model
  hf.save_pretrained(hf.T5Model.init(model_config, seed=7), tmp_path / "hf")
  config.init_from = str(tmp_path / "hf")
  data = SyntheticTask(batch_size=8, input_length=16, target_length=16, vocab_size=64)
  batch = data.global_batch(0)
  loop.train(run_config(config), tmp_path / "run", data)
  # The first logged loss is the loss of the loaded weights on batch 0.
  loaded = hf.load_pretrained(tmp_path / "hf")
  logits = np.asarray(
    loaded.logits(
      batch["encoder_input_tokens"],
      batch["decoder_input_tokens"],
      attention_mask=batch["encoder_input_tokens"] != 0,
    )
  )
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  token_loss = -np.take_along_axis(log_probs, batch["decoder_target_tokens"][..., None], -1)[..., 0]
  weights = batch["decoder_loss_weights"]
  expected = float((token_loss * weights).sum() / weights.sum())
  assert read_metrics(tmp_path / "run")[1]["loss"] == pytest.approx(expected, rel=1e-5)


def test_init_from_with_another_shape_is_refused(tmp_path):
  config = tiny_config(steps=1)
  model_config = run_config(config).model.replace(d_ff=128)
  hf.save_pretrained(hf.T5Model.init(model_config), tmp_path / "hf")
  config.init_from = str(tmp_path / "hf")
  data = SyntheticTask(batch_size=8, input_length=16, target_length=16, vocab_size=64)
  with pytest.raises(ValueError, match=r"init_from.*different model shape.*d_ff.*\(128, 64\)"):
    loop.train(run_config(config), tmp_path / "run", data)


def test_a_checkpoints_data_state_resumes_on_any_process_count_when_global():
  pick = state._data_state_for_this_process
  assert pick({"data_state": {"row": 1}}, 5) == {"row": 1}
  assert pick({"data_states": [{"p": 3}, {"p": 3}]}, 5) == {"p": 3}  # older list, global stream
  with pytest.raises(state.CheckpointMismatchError, match="of 2 process.*resume it with 2"):
    pick({"data_states": [{"p": 3}, {"p": 4}]}, 5)  # per-process streams, now one process
