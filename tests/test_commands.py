"""End to end through tools/launch.py: train (a few real steps), resume, eval, export, multiprocess.

The full `make demo` is not a unit test; these run the demo config for a handful of steps.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = [
  "--config.train.steps=4",
  "--config.train.checkpoint_every=2",
  "--config.train.log_every=2",
  "--config.train.batch_size=8",
  "--config.eval.max_examples=2",
  "--config.eval.batch_size=8",
  "--config.eval_mixtures=toy_eval_sentiment,toy_eval_closed_book_qa",
]


def _launch(*args, env=None, timeout=600):
  result = subprocess.run(
    [sys.executable, str(REPO / "tools" / "launch.py"), *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=timeout,
    env=dict(os.environ, **(env or {})),
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo") / "run"
  _launch("train", "--config", "configs/demo.py", "--workdir", str(workdir), *SMALL)
  return workdir


@pytest.mark.slow
def test_train_writes_metrics_and_checkpoints(trained):
  lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
  assert [x["step"] for x in lines] == [2, 4]
  assert all(np.isfinite(x["loss"]) and x["tokens_per_second"] > 0 for x in lines)
  assert sorted(p.name for p in (trained / "checkpoints").iterdir() if p.name.isdigit()) == [
    "2",
    "4",
  ]


@pytest.mark.slow
def test_running_again_resumes_without_error(trained):
  result = _launch("train", "--config", "configs/demo.py", "--workdir", str(trained), *SMALL)
  assert "trained to step 4" in result.stdout
  lines = (trained / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2  # nothing recomputed, nothing duplicated


@pytest.mark.slow
def test_eval_writes_a_report_marking_the_heldout_category(trained):
  result = _launch("eval", "--config", "configs/demo.py", "--workdir", str(trained), *SMALL)
  report = json.loads((trained / "eval" / "step_4" / "report.json").read_text())
  assert report["categories"]["sentiment"]["heldout"] is True
  assert report["categories"]["closed_book_qa"]["heldout"] is False
  assert "| sentiment | yes |" in result.stdout
  assert (trained / "eval" / "step_4" / "report.png").stat().st_size > 1000


@pytest.mark.slow
def test_eval_of_a_missing_step_lists_the_existing_ones(trained):
  result = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools" / "launch.py"),
      "eval",
      "--config",
      "configs/demo.py",
      "--workdir",
      str(trained),
      "--checkpoint",
      "3",
      *SMALL,
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=600,
  )
  assert result.returncode == 2
  assert "--checkpoint 3 does not exist" in result.stderr and "[2, 4]" in result.stderr


@pytest.mark.slow
def test_export_loads_in_transformers_with_the_same_logits(trained, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  _launch(
    "export",
    "--config",
    "configs/demo.py",
    "--workdir",
    str(trained),
    "--out",
    str(tmp_path / "hf"),
    *SMALL,
  )
  from flanjax.model import hf

  ours = hf.load_pretrained(tmp_path / "hf")
  reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
  enc = np.array([[72, 105, 33, 1]])  # no padding: HF attends to every position by default
  dec = np.array([[0, 72, 105]])
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec)).logits
  np.testing.assert_allclose(np.asarray(ours.logits(enc, dec)), theirs.numpy(), atol=1e-4)


@pytest.mark.slow
def test_multiprocess_launcher_runs_real_steps(tmp_path):
  workdir = tmp_path / "mp"
  _launch(
    "train",
    "--config",
    "configs/demo.py",
    "--workdir",
    str(workdir),
    "--launcher",
    "multiprocess",
    "--num_processes",
    "2",
    "--config.train.steps=2",
    "--config.train.checkpoint_every=2",
    "--config.train.log_every=1",
    "--config.train.batch_size=8",
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [x["step"] for x in lines] == [1, 2]  # one writer: process 0
  extra = next((workdir / "checkpoints" / "2").glob("extra*"))
  assert extra.exists()


def test_unknown_mixture_is_refused_before_the_workdir_is_touched(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      str(REPO / "tools" / "launch.py"),
      "train",
      "--config",
      "configs/demo.py",
      "--workdir",
      str(tmp_path / "w"),
      "--config.mixture=toy_holdout_nope",
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=600,
  )
  assert result.returncode == 2
  assert "unknown mixture or task 'toy_holdout_nope'" in result.stderr
  assert "toy_holdout_sentiment" in result.stderr  # the known ones are listed
  assert not (tmp_path / "w").exists()
