"""The one config reader: keys, defaults, and clear errors naming the key, before any compile."""

import dataclasses
import pathlib

import pytest

from flanjax import cli
from flanjax.config import RunConfig, default_config_dict, key_table, to_flat_dict
from flanjax.train import loop
from flanjax.train.synthetic import SyntheticTask
from tests.train.helpers import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(
  p.name for p in (REPO / "configs").glob("*.py") if p.name not in ("__init__.py", "common.py")
)


def test_from_config_reads_the_contract_keys_and_defaults():
  config = tiny_config(steps=7, batch_size=16)
  config.optimizer.name = "adamw"
  rc = RunConfig.from_config_dict(config)
  assert (rc.train.steps, rc.train.batch_size) == (7, 16)
  assert (rc.data.input_length, rc.data.target_length) == (16, 16)
  assert rc.optimizer.name == "adamw" and rc.model.d_model == 32
  assert (rc.train.microbatches, rc.train.non_finite, rc.init_from) == (1, "skip", "")
  assert rc.validate(num_devices=8, process_count=2) == (1, 8, 1)


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
    RunConfig.from_config_dict(config)


def test_init_from_directory_without_config_json(tmp_path):
  config = tiny_config()
  config.init_from = str(tmp_path)
  with pytest.raises(ValueError, match="init_from.*without config.json"):
    RunConfig.from_config_dict(config)


def test_missing_required_key_is_named():
  config = tiny_config()
  del config.train["keep_checkpoints"]
  with pytest.raises(KeyError, match=r"config.train.keep_checkpoints is missing"):
    RunConfig.from_config_dict(config)


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
  rc = RunConfig.from_config_dict(config)
  with pytest.raises(ValueError, match=message):
    rc.validate(num_devices=devices, process_count=2 if batch == 9 else 1)


def test_train_rejects_a_bad_mesh_before_touching_the_workdir(tmp_path):
  config = tiny_config()
  config.mesh.fsdp, config.mesh.model = 3, 7  # 21 devices: never what this machine has
  data = SyntheticTask(batch_size=8, input_length=16, target_length=16, vocab_size=64)
  with pytest.raises(ValueError, match="mesh"):
    loop.train(RunConfig.from_config_dict(config), tmp_path / "run", data)
  assert not (tmp_path / "run").exists()


def test_base_config_is_the_key_table():
  """configs/common.py derives from the reader's table: same keys, same defaults."""
  from configs import common

  base = common.base_config()
  assert sorted(cli.flat_keys(base)) == sorted(key_table())
  rc = RunConfig.from_config_dict(base)
  flat = to_flat_dict(rc)
  for key, (default, _) in key_table().items():
    if default is not None:
      assert flat[key] == default, key
  assert rc == RunConfig.from_config_dict(default_config_dict())
  assert rc.train.z_loss == 1e-4 and rc.data.pack is True


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_sets_only_table_keys(name):
  config = cli.load_config(str(REPO / "configs" / name))
  assert set(cli.flat_keys(config)) <= set(key_table()), name
  rc = RunConfig.from_config_dict(config)  # and the reader accepts every value
  assert dataclasses.asdict(rc)


def test_a_key_the_table_lacks_is_refused():
  config = tiny_config()
  config.train.pack_harder = True
  with pytest.raises(ValueError, match=r"unknown config key config.train.pack_harder"):
    RunConfig.from_config_dict(config)


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("train.steps", 12.9, r"config.train.steps=12.9: expected a whole number"),
    ("train.batch_size", "8", r"config.train.batch_size='8': expected a whole number"),
    ("train.pack", "yes", r"config.train.pack='yes': expected true or false"),
    ("eval_mixtures", 3, r"config.eval_mixtures=3: expected a list of names"),
  ],
)
def test_badly_typed_values_name_the_key(key, value, message):
  rc = RunConfig.from_config_dict(tiny_config())
  with pytest.raises(ValueError, match=message):
    rc.replace_key(key, value)


def test_eval_config_takes_the_run_lengths_unless_set():
  rc = RunConfig.from_config_dict(tiny_config())
  assert (rc.eval_config.input_length, rc.eval_config.target_length) == (16, 16)
  rc = rc.replace_key("eval.inputs", 64)
  assert (rc.eval_config.input_length, rc.eval_config.target_length) == (64, 16)
