"""tools/launch.py: parsing, overrides, workdir safety, and the cluster launchers' exact output."""

import json
import os
import pathlib
import shlex
import subprocess
import sys

import ml_collections
import pytest

from flanjax import cli
from flanjax.errors import UsageError
from flanjax.workdir import prepare_workdir

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
    UsageError,
    match=r"--config\.trian\.steps.*did you mean "
    r"--config\.train\.steps",
  ):
    cli.apply_overrides(_config(), [("trian.steps", "3")])


def test_badly_typed_value_names_key():
  with pytest.raises(UsageError, match=r"--config\.train\.steps='many': expected a int"):
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
  config = cli.read_run_config(_config())
  prepare_workdir(str(workdir), config, overwrite=False)
  (workdir / "precious.txt").write_text("checkpoint")
  extended = cli.read_run_config(cli.apply_overrides(_config(), [("train.steps", "5")]))
  prepare_workdir(str(workdir), extended, overwrite=False)  # extending a run: the same config
  other = cli.read_run_config(cli.apply_overrides(_config(), [("model.d_model", "96")]))
  with pytest.raises(UsageError, match=r"different config \(model\.d_model: 128 -> 96\)"):
    prepare_workdir(str(workdir), other, overwrite=False)
  prepare_workdir(str(workdir), other, overwrite=True)
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
  assert len(aside) == 1 and (aside[0] / "precious.txt").read_text() == "checkpoint"
  assert json.loads((workdir / "config.json").read_text())["model"]["d_model"] == 96


def _data_dir_args():
  """The launchers pass env FLANJAX_DATA_DIR on to the remote processes as a config key."""
  data_dir = os.environ.get("FLANJAX_DATA_DIR")
  return [f"--config.data_dir={os.path.abspath(data_dir)}"] if data_dir else []


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
    "--port",
    "23456",
    "--dry_run",
  )
  assert result.returncode == 0, result.stderr
  command = shlex.join(
    [
      sys.executable,
      "tools/launch.py",
      "train",
      "--config",
      str(REPO / "configs" / "flan_t5_base.py"),
      "--workdir",
      "/runs/base",
      "--config.train.steps=10",
      *_data_dir_args(),
      "--launcher",
      "local",
    ]
  )
  per_task = (
    "export FLANJAX_PROCESS_ID=$SLURM_PROCID; export CUDA_VISIBLE_DEVICES=$SLURM_LOCALID; "
    f"exec {command}"
  )
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
export FLANJAX_COORDINATOR="$COORDINATOR_HOST:23456"
export FLANJAX_NUM_PROCESSES="$SLURM_NTASKS"
srun --kill-on-bad-exit=1 bash -c {shlex.quote(per_task)}
"""
  assert result.stdout == expected


def test_slurm_script_survives_spaces_and_quotes(tmp_path):
  workdir = str(tmp_path / "my dir" / 'it\'s "here"')
  args = ["--workdir", workdir, "--config.mixture=toy", "--config.eval_mixtures=a b"]
  result = _run("train", "--config", "configs/demo.py", *args, "--launcher", "slurm", "--dry_run")
  assert result.returncode == 0, result.stderr
  script = tmp_path / "job.sbatch"
  script.write_text(result.stdout)
  syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
  assert syntax.returncode == 0, syntax.stderr
  srun = [line for line in result.stdout.splitlines() if line.startswith("srun ")][0]
  outer = shlex.split(srun)  # what sbatch's bash passes to srun
  assert outer[:4] == ["srun", "--kill-on-bad-exit=1", "bash", "-c"] and len(outer) == 5
  exec_part = outer[4].split("; exec ", 1)[1]
  inner = shlex.split(exec_part)  # what srun's bash -c runs
  assert inner[0] == sys.executable  # the interpreter (venv) that launched, not bare python
  assert inner[inner.index("--workdir") + 1] == workdir
  assert "--config.eval_mixtures=a b" in inner
  assert inner[inner.index("--config") + 1] == str(REPO / "configs" / "demo.py")
  assert inner[-2:] == ["--launcher", "local"]
  assert f"--output={shlex.quote(os.path.join(workdir, 'slurm-%j.out'))}" in result.stdout


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
  remote = shlex.join(
    [
      "python3",
      "tools/launch.py",
      "train",
      "--config",
      "configs/flan_t5_large.py",
      "--workdir",
      "gs://b/run",
      *_data_dir_args(),
      "--launcher",
      "local",
    ]
  )
  assert result.stdout == (
    "gcloud compute tpus tpu-vm ssh my-v4-32 --zone=us-central2-b --worker=all "
    + shlex.quote(f"--command=cd ~/flanjax && {remote}")
    + "\n"
  )
  command = shlex.split(result.stdout)[-1].split("&& ", 1)[1]
  assert shlex.split(command)[shlex.split(command).index("--workdir") + 1] == "gs://b/run"


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
  train_config = cli.read_run_config(config)
  shapes = t5.abstract_params(train_config.model)
  assert t5.count_params(shapes) > 0
  if name.startswith("flan_t5_"):
    size = name[len("flan_t5_") : -3]
    expected = {"small": 77e6, "base": 248e6, "large": 783e6, "xl": 2.85e9, "xxl": 11.14e9}[
      size
    ]  # flan-t5 parameter counts (HF google/flan-t5-*)
    assert abs(t5.count_params(shapes) - expected) / expected < 0.02


USER_MODULE = """
from flanjax.data import register_flan_mixtures, register_flan_task

register_flan_task(
  "my_e2e",
  source=DATA,  # an absolute folder: no data dir needed
  templates=[("Describe: {mr}", "{ref}"), ("{mr}\\nWrite a sentence about it.", "{ref}")],
  category="struct_to_text",
  metrics=["rouge"],
)
register_flan_mixtures("my_mix", ["my_e2e"])
"""


@pytest.mark.slow
def test_a_user_module_is_imported_by_the_flag(tmp_path):
  data = tmp_path / "e2e"
  data.mkdir()
  for split in ("train", "test"):
    rows = [{"mr": f"name[Blue] food[{i}]", "ref": f"Blue serves food {i}."} for i in range(3)]
    (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  module = tmp_path / "elsewhere" / "my_tasks.py"
  module.parent.mkdir()
  module.write_text(f"DATA = {str(data)!r}\n" + USER_MODULE)
  result = _run("tasks", "--import", str(module))
  assert result.returncode == 0, result.stderr
  assert "my_e2e" in result.stdout and "my_mix_eval_struct_to_text" in result.stdout
  result = _run("show", "--task", "my_e2e", "--import", str(module), "-n", "1", "--split", "test")
  assert result.returncode == 0, result.stderr
  assert "Describe: name[Blue] food[0]" in result.stdout and "Blue serves food 0." in result.stdout
  assert "oneDNN" not in result.stderr  # TensorFlow's start-up chatter is silenced
  result = _run("tasks", "--import", str(tmp_path / "missing.py"))
  assert result.returncode == 2 and "--import" in result.stderr and "missing.py" in result.stderr


def test_every_module_under_mixtures_is_registered_without_editing_init():
  import mixtures

  shipped = sorted(p.stem for p in (REPO / "mixtures").glob("*.py") if not p.name.startswith("_"))
  assert sorted(m.__name__.split(".")[-1] for m in mixtures.MODULES) == shipped


def test_each_subcommand_has_its_own_help():
  result = _run("predict", "--help")
  assert result.returncode == 0
  assert "--input" in result.stdout and "--task" not in result.stdout
  result = _run("show", "--help")
  assert "--task" in result.stdout and "--launcher" not in result.stdout


def test_multiprocess_says_which_process_died_and_stops_the_others(monkeypatch, capfd):
  import time

  from flanjax import launchers

  code = (
    "import os, sys, time\n"
    "if os.environ['FLANJAX_PROCESS_ID'] == '1':\n"
    "  sys.exit(3)\n"
    "time.sleep(60)\n"
  )
  monkeypatch.setattr(launchers, "local_command", lambda args: [sys.executable, "-c", code])
  start = time.monotonic()
  assert launchers.run_multiprocess([], 3, timeout=50) == 3
  assert time.monotonic() - start < 30  # the sleeping ones were stopped, not waited for
  err = capfd.readouterr().err
  assert "multiprocess: process 1 of 3 exited with code 3; stopping the other 2" in err


def test_importing_mixtures_first_is_quiet_too():
  # mixtures/benchmarks.py imports seqio (and so TensorFlow) itself: the package must still
  # import TensorFlow through flanjax.data's quiet path first.
  result = subprocess.run(
    [sys.executable, "-c", "import mixtures"], capture_output=True, text=True, cwd=REPO
  )
  assert result.returncode == 0, result.stderr
  assert "oneDNN" not in result.stderr and "cuda drivers" not in result.stderr
