"""Best-template logic and aggregation on fabricated per-template scores."""

import doctest

import pytest

from flanjax.eval import scoring


def _per_template(val, test, key="accuracy"):
  return {str(t): {"validation": {key: v}, "test": {key: test[t]}} for t, v in enumerate(val)}


def test_best_template_is_chosen_on_validation_and_reported_on_test():
  # Template 2 is best on validation but worst on test: FLAN reports its test score anyway.
  per_template = _per_template(val=[50.0, 60.0, 90.0], test=[70.0, 80.0, 40.0])
  summary = scoring.summarize_task(
    "rte", category="nli", metric_names=["accuracy"], per_template=per_template, report_split="test"
  )
  assert summary["best_template"] == {
    "template_id": "2",
    "selected_on": "validation",
    "selected_on_report_split": False,
    "scores": {"accuracy": 40.0},
  }
  assert summary["score"] == 40.0
  assert summary["score_mean_templates"] == pytest.approx((70 + 80 + 40) / 3)
  assert summary["mean_over_templates"] == {"accuracy": pytest.approx(190 / 3)}


def test_primary_metric_drives_selection_with_several_metrics():
  per_template = {
    "0": {
      "validation": {"rouge1": 90.0, "rouge2": 10.0, "rougeLsum": 20.0},
      "test": {"rouge1": 1.0, "rouge2": 2.0, "rougeLsum": 3.0},
    },
    "1": {
      "validation": {"rouge1": 10.0, "rouge2": 10.0, "rougeLsum": 30.0},
      "test": {"rouge1": 4.0, "rouge2": 5.0, "rougeLsum": 6.0},
    },
  }
  summary = scoring.summarize_task(
    "dialogsum",
    category="summarization",
    metric_names=["rouge"],
    per_template=per_template,
    report_split="test",
  )
  assert summary["primary_metric"] == "rougeLsum"
  assert summary["best_template"]["template_id"] == "1" and summary["score"] == 6.0


def test_without_selection_split_selects_on_report_split():
  per_template = {"0": {"validation": {"accuracy": 30.0}}, "1": {"validation": {"accuracy": 70.0}}}
  summary = scoring.summarize_task(
    "sst2",
    category="sentiment",
    metric_names=["accuracy"],
    per_template=per_template,
    report_split="validation",
  )
  assert summary["best_template"]["selected_on"] == "validation"
  assert summary["score"] == 70.0 and summary["score_mean_templates"] == 50.0


def test_ties_go_to_lowest_template_id_numerically():
  scores = {"10": {"bleu": 5.0}, "2": {"bleu": 5.0}, "3": {"bleu": 1.0}}
  assert scoring.select_best_template(scores, "bleu") == "2"


def test_errors_are_clear():
  with pytest.raises(ValueError, match="no template was scored on split 'test'"):
    scoring.summarize_task(
      "t",
      category="c",
      metric_names=["accuracy"],
      per_template={"0": {"validation": {"accuracy": 1.0}}},
      report_split="test",
    )
  with pytest.raises(ValueError, match="declares no metrics"):
    scoring.summarize_task(
      "t",
      category="c",
      metric_names=[],
      per_template={"0": {"test": {"accuracy": 1.0}}},
      report_split="test",
    )
  with pytest.raises(ValueError, match="template '1' has metrics"):
    scoring.mean_over_templates({"0": {"a": 1.0}, "1": {"b": 1.0}})


def test_categories_mean_heldout_and_failures():
  ok = scoring.summarize_task(
    "rte",
    category="nli",
    metric_names=["accuracy"],
    per_template=_per_template([1.0], [60.0]),
    report_split="test",
  )
  ok2 = scoring.summarize_task(
    "cb",
    category="nli",
    metric_names=["accuracy"],
    per_template=_per_template([1.0, 2.0], [70.0, 90.0]),
    report_split="test",
  )
  bad = scoring.failed_task(
    "sst2", category="sentiment", metric_names=["accuracy"], error="boom", report_split="test"
  )
  categories = scoring.aggregate_categories([ok, ok2, bad], heldout_categories=["nli"])
  assert categories["nli"]["heldout"] is True and categories["sentiment"]["heldout"] is False
  assert categories["nli"]["score"] == pytest.approx((60 + 90) / 2)
  assert categories["nli"]["score_mean_templates"] == pytest.approx((60 + 80) / 2)
  assert categories["nli"]["tasks"] == ["rte", "cb"]
  assert categories["sentiment"]["score"] is None
  assert categories["sentiment"]["failed_tasks"] == ["sst2"]


def test_heldout_categories_from_training_categories():
  assert scoring.heldout_categories(["a", "b"], ["b", "c", "d", "c"]) == ["c", "d"]


def test_docstring_examples():
  result = doctest.testmod(scoring)
  assert result.attempted > 3 and result.failed == 0
