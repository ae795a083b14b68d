"""tools/launch.py: parsing, overrides, workdir safety, and the cluster launchers' exact output."""

import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from flanjax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = str(REPO / "tools" / "launch.py")


def _config():
  return cli.load_config(str(REPO / "configs" / "demo.py"))


def test_overrides_are_typed():
  config = cli.apply_overrides(
    _config(),
    [
      ("train.steps", "7"),
      ("optimizer.learning_rate", "0.5"),
      ("train.pack", "false"),
      ("eval_mixtures", "toy_eval_misc,toy_eval_sentiment"),
      ("model.num_decoder_layers", "3"),
      ("mixture", "toy"),
    ],
  )
  assert config.train.steps == 7 and isinstance(config.train.steps, int)
  assert config.optimizer.learning_rate == 0.5
  assert config.train.pack is False
  assert tuple(config.eval_mixtures) == ("toy_eval_misc", "toy_eval_sentiment")
  assert config.model.num_decoder_layers == 3
  assert config.mixture == "toy"


def test_unknown_key_suggests_close_matches():
  with pytest.raises(
    cli.UsageError,
    match=r"--config\.trian\.steps.*did you mean "
    r"--config\.train\.steps",
  ):
    cli.apply_overrides(_config(), [("trian.steps", "3")])


def test_badly_typed_value_names_key():
  with pytest.raises(cli.UsageError, match=r"--config\.train\.steps='many': expected a int"):
    cli.apply_overrides(_config(), [("train.steps", "many")])


def test_split_overrides_both_spellings():
  rest, overrides = cli.split_overrides(
    ["train", "--config.train.steps=3", "--config.seed", "4", "--workdir", "w"]
  )
  assert rest == ["train", "--workdir", "w"]
  assert overrides == [("train.steps", "3"), ("seed", "4")]


def _run(*args, env=None):
  return subprocess.run(
    [sys.executable, LAUNCH, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
  )


def test_unknown_command_and_launcher_and_missing_workdir():
  result = _run("trian", "--config", "configs/demo.py")
  assert result.returncode == 2 and "unknown command 'trian'; did you mean 'train'" in result.stderr
  result = _run("train", "--config", "configs/demo.py", "--workdir", "w", "--launcher", "k8s")
  assert result.returncode == 2 and "unknown --launcher 'k8s'" in result.stderr
  result = _run("train", "--config", "configs/demo.py")
  assert result.returncode == 2 and "train needs --workdir DIR" in result.stderr
  result = _run("train", "--config", "configs/nope.py", "--workdir", "w")
  assert result.returncode == 2 and "config file configs/nope.py does not exist" in result.stderr


def test_workdir_from_another_config_is_refused_then_moved_aside(tmp_path):
  workdir = tmp_path / "run"
  config = _config()
  cli.prepare_workdir(str(workdir), config, overwrite=False)
  (workdir / "precious.txt").write_text("checkpoint")
  cli.prepare_workdir(
    str(workdir), cli.apply_overrides(_config(), [("train.steps", "5")]), overwrite=False
  )  # extending a run is the same config
  other = cli.apply_overrides(_config(), [("model.d_model", "96")])
  with pytest.raises(cli.UsageError, match=r"different config \(keys \['model\.d_model'\]"):
    cli.prepare_workdir(str(workdir), other, overwrite=False)
  cli.prepare_workdir(str(workdir), other, overwrite=True)
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
  assert len(aside) == 1 and (aside[0] / "precious.txt").read_text() == "checkpoint"
  assert json.loads((workdir / "config.json").read_text())["model"]["d_model"] == 96


def test_slurm_dry_run_prints_the_exact_script():
  result = _run(
    "train",
    "--config",
    "configs/flan_t5_base.py",
    "--workdir",
    "/runs/base",
    "--config.train.steps=10",
    "--launcher",
    "slurm",
    "--nodes",
    "2",
    "--gpus_per_node",
    "8",
    "--partition",
    "gpu",
    "--dry_run",
  )
  assert result.returncode == 0, result.stderr
  expected = f"""#!/bin/bash
#SBATCH --job-name=flanjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=24:00:00
#SBATCH --output=/runs/base/slurm-%j.out
#SBATCH --partition=gpu
set -euo pipefail
cd {REPO}
# jax.distributed: process 0 on the first node coordinates; each task is one process/GPU.
COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export FLANJAX_COORDINATOR="$COORDINATOR_HOST:12355"
export FLANJAX_NUM_PROCESSES="$SLURM_NTASKS"
srun --kill-on-bad-exit=1 bash -c 'export FLANJAX_PROCESS_ID=$SLURM_PROCID; export \
CUDA_VISIBLE_DEVICES=$SLURM_LOCALID; exec python tools/launch.py train --config \
configs/flan_t5_base.py --workdir /runs/base --config.train.steps=10 --launcher local'
""".replace("\\\n", "")
  assert result.stdout == expected


def test_tpu_vm_dry_run_prints_the_exact_command():
  result = _run(
    "train",
    "--config",
    "configs/flan_t5_large.py",
    "--workdir",
    "gs://b/run",
    "--launcher",
    "tpu-vm",
    "--tpu",
    "my-v4-32",
    "--zone",
    "us-central2-b",
    "--dry_run",
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout == (
    "gcloud compute tpus tpu-vm ssh my-v4-32 --zone=us-central2-b --worker=all "
    "'--command=cd ~/flanjax && python3 tools/launch.py train --config "
    "configs/flan_t5_large.py --workdir gs://b/run --launcher local'\n"
  )


def test_tpu_vm_needs_tpu_and_zone():
  result = _run(
    "train", "--config", "configs/demo.py", "--workdir", "w", "--launcher", "tpu-vm", "--dry_run"
  )
  assert result.returncode == 2 and "needs --tpu NAME and --zone ZONE" in result.stderr


def test_missing_cluster_tools_say_what_to_do(tmp_path):
  env = dict(os.environ, PATH=str(tmp_path))  # neither sbatch nor gcloud on PATH
  result = _run(
    "train",
    "--config",
    "configs/demo.py",
    "--workdir",
    str(tmp_path / "w"),
    "--launcher",
    "slurm",
    env=env,
  )
  assert result.returncode == 2 and "sbatch is not installed" in result.stderr
  result = _run(
    "train",
    "--config",
    "configs/demo.py",
    "--workdir",
    str(tmp_path / "w"),
    "--launcher",
    "tpu-vm",
    "--tpu",
    "t",
    "--zone",
    "z",
    env=env,
  )
  assert result.returncode == 2 and "gcloud is not installed" in result.stderr


def test_relaunch_args_drop_launcher_flags():
  argv = [
    "train",
    "--config",
    "c.py",
    "--launcher",
    "multiprocess",
    "--num_processes=2",
    "--workdir",
    "w",
    "--dry_run",
    "--config.seed=1",
  ]
  assert cli._relaunch_args(argv) == [
    "train",
    "--config",
    "c.py",
    "--workdir",
    "w",
    "--config.seed=1",
  ]


@pytest.mark.parametrize(
  "name",
  sorted(
    p.name for p in (REPO / "configs").glob("*.py") if p.name not in ("__init__.py", "common.py")
  ),
)
def test_every_config_loads_and_builds_its_model_shape(name):
  from flanjax.model import t5
  from flanjax.train.config import TrainConfig

  config = cli.load_config(str(REPO / "configs" / name))
  assert isinstance(config, ml_collections.ConfigDict)
  module_doc = (REPO / "configs" / name).read_text().split('"""')[1]
  for word in ("Command:", "Hardware:", "Time:", "Expected:"):
    assert word in module_doc, f"{name} docstring lacks {word}"
  for key in (
    "seed",
    "data_dir",
    "init_from",
    "mixture",
    "eval_mixtures",
    "lengths.inputs",
    "lengths.targets",
    "train.steps",
    "train.batch_size",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "optimizer.name",
    "optimizer.learning_rate",
    "optimizer.schedule",
    "mesh.data",
    "mesh.fsdp",
    "mesh.model",
  ):
    assert key in cli.flat_keys(config), (name, key)
  train_config = TrainConfig.from_config(config)
  shapes = t5.abstract_params(train_config.model)
  assert t5.count_params(shapes) > 0
  if name.startswith("flan_t5_"):
    size = name[len("flan_t5_") : -3]
    expected = {"small": 77e6, "base": 248e6, "large": 783e6}[size]  # flan-t5 parameter counts
    assert abs(t5.count_params(shapes) - expected) / expected < 0.02
