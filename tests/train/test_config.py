"""Bad input: clear errors naming the config key, raised before anything is compiled."""

import pytest

from flanjax.train import TrainConfig, loop
from flanjax.train.synthetic import SyntheticTask
from tests.train.helpers import tiny_config


def test_from_config_reads_the_contract_keys_and_defaults():
  config = tiny_config(steps=7, batch_size=16)
  config.optimizer.name = "adamw"
  tc = TrainConfig.from_config(config)
  assert (tc.steps, tc.batch_size, tc.input_length, tc.target_length) == (7, 16, 16, 16)
  assert tc.optimizer.name == "adamw" and tc.model.d_model == 32
  assert (tc.num_microbatches, tc.non_finite, tc.init_from) == (1, "skip", "")
  assert tc.validate(num_devices=8, process_count=2) == (1, 8, 1)


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda c: c.optimizer.update(name="lion"), r"optimizer.name='lion'"),
    (lambda c: c.optimizer.update(schedule="step"), r"optimizer.schedule='step'"),
    (
      lambda c: c.train.update(batch_size=6, microbatches=4),
      r"train.batch_size=6 is not divisible by config.train.microbatches=4",
    ),
    (lambda c: c.train.update(non_finite="ignore"), r"train.non_finite='ignore'"),
    (lambda c: c.update(init_from="/nonexistent/t5-checkpoint"), r"init_from=.*does not exist"),
    (lambda c: c.model.update(d_modle=64), r"config.model has unknown field.*d_modle"),
    (lambda c: c.train.update(steps=0), r"train.steps=0 must be positive"),
  ],
)
def test_bad_config_values_name_the_key(edit, message):
  config = tiny_config()
  edit(config)
  with pytest.raises(ValueError, match=message):
    TrainConfig.from_config(config)


def test_init_from_directory_without_config_json(tmp_path):
  config = tiny_config()
  config.init_from = str(tmp_path)
  with pytest.raises(ValueError, match="init_from.*without config.json"):
    TrainConfig.from_config(config)


def test_missing_required_key_is_named():
  config = tiny_config()
  del config.train["keep_checkpoints"]
  with pytest.raises(KeyError, match=r"config.train.keep_checkpoints is missing"):
    TrainConfig.from_config(config)


@pytest.mark.parametrize(
  "mesh, batch, micro, devices, message",
  [
    ((1, 3, -1), 12, 1, 8, r"mesh.*does not divide 8 devices"),
    ((2, 2, 2), 6, 1, 8, r"train.batch_size=6 is not divisible by the batch shards"),
    ((1, 4, 1), 8, 4, 4, r"train.microbatches=4: microbatches of 2 rows"),
    ((1, -1, 1), 9, 1, 1, r"train.batch_size=9 is not divisible by 2 processes"),
  ],
)
def test_device_dependent_errors_name_the_key(mesh, batch, micro, devices, message):
  config = tiny_config(batch_size=batch, microbatches=micro)
  config.mesh.data, config.mesh.fsdp, config.mesh.model = mesh
  tc = TrainConfig.from_config(config)
  with pytest.raises(ValueError, match=message):
    tc.validate(num_devices=devices, process_count=2 if batch == 9 else 1)


def test_train_rejects_a_bad_mesh_before_touching_the_workdir(tmp_path):
  config = tiny_config()
  config.mesh.fsdp, config.mesh.model = 3, 7  # 21 devices: never what this machine has
  data = SyntheticTask(batch_size=8, input_length=16, target_length=16, vocab_size=64)
  with pytest.raises(ValueError, match="mesh"):
    loop.train(config, tmp_path / "run", data)
  assert not (tmp_path / "run").exists()
