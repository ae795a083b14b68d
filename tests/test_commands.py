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


def _refused(*args):
  result = subprocess.run(
    [sys.executable, str(REPO / "tools" / "launch.py"), *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=600,
  )
  assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
  return result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo") / "run"
  result = _launch("train", "--config", "configs/demo.py", "--workdir", str(workdir), *SMALL)
  # Before the first progress line, the run says what it is doing (no minute of silence).
  said = result.stdout
  assert said.index("loading data: mixture toy_holdout_sentiment") < said.index("compiling")
  assert said.index("compiling the train step") < said.index("step 2/4 | loss")
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
  assert "trained to step 4" in result.stdout and "resumed from step 4" in result.stdout
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
  args = ["--config", "configs/demo.py", "--workdir", str(trained), "--checkpoint", "3", *SMALL]
  stderr = _refused("eval", *args)
  assert "--checkpoint 3 does not exist" in stderr and "[2, 4]" in stderr


@pytest.mark.slow
def test_eval_refuses_a_config_the_workdir_was_not_trained_with(trained):
  args = ["--config", "configs/demo.py", "--workdir", str(trained), *SMALL]
  stderr = _refused("eval", *args, "--config.model.d_ff=128")
  assert "trained with a different config (model.d_ff: 256 -> 128)" in stderr


@pytest.mark.slow
def test_predict_round_trip_keeps_fields_and_reports_bad_lines(trained, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  rows = [{"input": "Repeat: car egg", "id": 1}, {"prompt": "Reverse: sun cup", "id": 2}]
  prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "preds.jsonl"
  # No --config: the workdir's recorded config is used.
  result = _launch(
    "predict", "--workdir", str(trained), "--input", str(prompts), "--output", str(out)
  )
  assert f"wrote 2 predictions of {trained} step 4" in result.stdout
  written = [json.loads(line) for line in out.read_text().splitlines()]
  assert [w["id"] for w in written] == [1, 2] and written[1]["prompt"] == "Reverse: sun cup"
  assert all(isinstance(w["prediction"], str) for w in written)
  # The same predictions as the model itself, greedy.
  import mixtures  # noqa: F401
  from flanjax.config import RunConfig
  from flanjax.data import DataContext
  from flanjax.model import hf
  from flanjax.train.state import restore_params
  from flanjax.workdir import recorded_config

  rc = RunConfig.from_recorded(recorded_config(trained))
  params, _ = restore_params(trained, None, rc)
  vocabulary = DataContext().vocabulary_of(rc.data.mixture)
  ids = list(vocabulary.encode("Repeat: car egg")) + [1]
  generated = hf.T5Model(rc.model, params).generate(np.array([ids]), max_new_tokens=32)[0]
  expected = vocabulary.decode([int(t) for t in generated if t not in (0, 1)])
  assert written[0]["prediction"] == expected
  # A bad line is reported with its number; the existing output is untouched.
  prompts.write_text(json.dumps(rows[0]) + "\n{not json\n")
  before = out.read_text()
  args = ["--workdir", str(trained), "--input", str(prompts), "--output", str(out), "--overwrite"]
  assert f"{prompts}:2: malformed JSON" in _refused("predict", *args)
  assert out.read_text() == before


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
def test_export_ships_the_tokenizer_transformers_reproduces_our_prediction(trained, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  out = tmp_path / "hf_tok"
  _launch("export", "--config", "configs/demo.py", "--workdir", str(trained), "--out", str(out))
  import mixtures  # noqa: F401
  from flanjax.data import DataContext
  from flanjax.model import hf

  vocabulary = DataContext().vocabulary_of("toy_holdout_sentiment")  # what the demo trained on
  prompt = "Repeat these words: car egg sun"
  ids = list(vocabulary.encode(prompt)) + [1]
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  assert tokenizer(prompt).input_ids == ids  # the same tokenisation, not all-unknowns
  ours = hf.load_pretrained(out).generate(np.array([ids]), max_new_tokens=8)[0]
  reference = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  with torch.no_grad():
    theirs = reference.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, 1:]
  ours = [int(t) for t in ours if t != 0]
  theirs = [int(t) for t in theirs.tolist() if t != 0]
  assert ours == theirs and ours  # token for token
  assert tokenizer.decode(theirs, skip_special_tokens=True) == vocabulary.decode(
    [t for t in ours if t != 1]
  )


@pytest.mark.slow
def test_export_never_overwrites_a_run_or_a_non_empty_directory(trained, tmp_path):
  base = ["export", "--config", "configs/demo.py", "--workdir", str(trained), *SMALL]
  config_before = (trained / "config.json").read_text()
  assert "is the workdir or inside its managed files" in _refused(*base, "--out", str(trained))
  inside = str(trained / "checkpoints" / "hf")
  assert "inside its managed files" in _refused(*base, "--out", inside)
  assert (trained / "config.json").read_text() == config_before  # resume still works
  out = tmp_path / "hf_out"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  assert "is not empty; pass --overwrite" in _refused(*base, "--out", str(out))
  _launch(*base, "--out", str(out), "--overwrite")
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("hf_out.old-")]
  assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "mine"
  assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_second_train_on_a_locked_workdir_is_refused(tmp_path):
  workdir = tmp_path / "locked"
  workdir.mkdir()
  holder = {"host": __import__("socket").gethostname(), "pid": os.getpid(), "started": 0}
  (workdir / ".lock").write_text(json.dumps(holder))  # this (live) test process holds it
  stderr = _refused("train", "--config", "configs/demo.py", "--workdir", str(workdir), *SMALL)
  assert f"is in use by another run (host {holder['host']}, pid {os.getpid()}" in stderr
  assert not (workdir / "config.json").exists()


def _numbers(report: dict) -> dict:
  """A report without its timing fields (what must not depend on the process count)."""
  tasks = {
    name: {k: v for k, v in task.items() if k != "seconds"}
    for name, task in report["tasks"].items()
  }
  return {"tasks": tasks, "categories": report["categories"]}


@pytest.mark.slow
def test_a_two_process_eval_gives_the_one_process_report(trained):
  args = ["eval", "--config", "configs/demo.py", "--workdir", str(trained), *SMALL]
  path = trained / "eval" / "step_4" / "report.json"
  _launch(*args)
  one = json.loads(path.read_text())
  # 2 processes x 2 devices: every batch is split 4 ways, over both processes.
  result = _launch(
    *args,
    "--launcher",
    "multiprocess",
    "--num_processes",
    "2",
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  assert "eval batches split over 4 devices of 2 processes, mesh data=1 fsdp=4" in result.stdout
  two = json.loads(path.read_text())
  assert two["created"] >= one["created"]  # rewritten by the 2-process run
  assert _numbers(two) == _numbers(one)
  # The same model exported to HF and evaluated from there (each process reading only its own
  # slices of model.safetensors) gives the same report.
  exported = trained.parent / "hf_export_for_eval"
  _launch(
    "export", "--config", "configs/demo.py", "--workdir", str(trained), "--out", str(exported)
  )
  _launch(
    *args,
    "--hf_model",
    str(exported),
    "--launcher",
    "multiprocess",
    "--num_processes",
    "2",
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  from_hf = json.loads((trained / "eval" / f"hf_{exported.name}" / "report.json").read_text())
  assert _numbers(from_hf) == _numbers(one)


@pytest.mark.slow
def test_a_refused_run_records_nothing(tmp_path):
  workdir = tmp_path / "refused"
  base = ["train", "--config", "configs/demo.py", "--workdir", str(workdir), *SMALL]
  # A typo in eval_mixtures fails at start-up, not at the first in-training eval.
  stderr = _refused(
    *base, "--config.train.eval_every=2", "--config.eval_mixtures=toy_eval_sentimnt"
  )
  assert "config.eval_mixtures" in stderr and "toy_eval_sentimnt" in stderr
  # A batch that does not divide over the mesh is refused before the workdir is recorded.
  stderr = _refused(
    *base, "--config.train.batch_size=9", "--config.mesh.fsdp=1", "--config.mesh.data=2"
  )
  assert "config.train.batch_size=9" in stderr or "mesh" in stderr
  assert not (workdir / "config.json").exists()
  _launch(*base, "--config.train.steps=2")  # the corrected rerun is not "another config"


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
    # In-training eval on the training mesh, its batches split over both processes.
    "--config.train.eval_every=2",
    "--config.eval.max_examples=2",
    "--config.eval.batch_size=3",
    "--config.eval_mixtures=toy_eval_sentiment",
    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [x["step"] for x in lines if "loss" in x] == [1, 2]  # one writer: process 0
  evals = [x for x in lines if any(k.startswith("eval/") for k in x)]
  assert [x["step"] for x in evals] == [2]
  report = json.loads((workdir / "eval" / "step_2" / "report.json").read_text())
  assert report["tasks"] and all(t["error"] is None for t in report["tasks"].values())
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
