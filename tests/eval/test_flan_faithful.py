"""Scoring as FLAN scores (real shipped rows): every reference counts; the template is never
chosen on the split it is reported on."""

import os

import pytest

from flanjax.eval import evaluate as evaluate_lib
from flanjax.eval import metrics

DATA_DIR = os.environ.get("FLANJAX_DATA_DIR", "")
pytestmark = pytest.mark.skipif(
  not os.path.isdir(os.path.join(DATA_DIR, "nq_open")),
  reason="FLANJAX_DATA_DIR with the real datasets (../shared/data) is not set",
)


@pytest.fixture(scope="module")
def ctx():
  import mixtures  # noqa: F401
  from flanjax.data import DataContext

  return DataContext(data_dir=DATA_DIR)


def _tasks(ctx, names):
  from flanjax.eval.tasks import registry_eval_tasks

  return {t.name: t for t in registry_eval_tasks(ctx, names)}


def test_nq_and_commongen_are_scored_against_every_reference(ctx):
  from flanjax.data import sources

  tasks = _tasks(ctx, ["nq_open", "commongen"])
  nq = tasks["nq_open"].load("validation", 40)
  records = sources.bind(sources.LocalSource("nq_open"), DATA_DIR).load("validation")
  # Template 0's rows in order: every answer of the record is a reference.
  first_template = [e for e in nq if e.template_id == "0"]
  assert [list(e.target) for e in first_template] == [r["answer"] for r in records[:40]]
  # Predicting each example's LAST answer: perfect against all answers, not against the first.
  predictions = [e.target[-1] for e in first_template]
  assert metrics.trivia_qa([e.target for e in first_template], predictions)["exact_match"] == 100
  first_only = metrics.trivia_qa([e.target[0] for e in first_template], predictions)
  assert first_only["exact_match"] < 100
  scenes = [e for e in tasks["commongen"].load("validation", 5) if e.template_id == "0"]
  records = sources.bind(sources.LocalSource("commongen"), DATA_DIR).load("validation")
  assert [list(e.target) for e in scenes] == [r["scene"] for r in records[:5]]
  assert all(len(e.target) > 1 for e in scenes)


@pytest.mark.parametrize("name", ["sst2", "rte", "cb", "mrpc"])
def test_the_selection_split_is_never_the_reported_split(ctx, name):
  from flanjax.data import sources

  task = _tasks(ctx, [name])[name]
  splits = evaluate_lib._splits_for(task, "test", "validation", "validation")
  assert splits is not None and len(splits) == 2 and splits[0] != splits[1]
  assert splits[0] == "selection"
  # The selection rows are the last train rows, and training no longer sees them.
  raw = sources.bind(sources.LocalSource(name), DATA_DIR)
  source = ctx.bound_source(name)
  total = raw.count("train")
  taken = source.count("selection")
  assert taken == min(200, total // 4) and source.count("train") == total - taken
  assert source.load("selection") == raw.load("train")[-taken:]
  assert ctx.get(name).source.num_input_examples("train") == total - taken


def test_tasks_with_validation_and_test_choose_on_validation(ctx):
  task = _tasks(ctx, ["commongen"])["commongen"]
  assert evaluate_lib._splits_for(task, "test", "validation", "validation") == [
    "validation",
    "test",
  ]
  assert "selection" not in task.splits


def test_a_category_without_training_rows_is_held_out(ctx):
  from flanjax.eval.tasks import categories_of

  # nq_open (closed-book QA) has no train split: flan_mini draws no closed-book QA row.
  assert "closed_book_qa" not in categories_of(ctx, "flan_mini")
  assert "sentiment" in categories_of(ctx, "flan_mini")
  assert "sentiment" not in categories_of(ctx, "flan_mini_holdout_sentiment")
