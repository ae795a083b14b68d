"""Aggregation of metric values: per template, mean over templates, best template, per category.

FLAN's protocol: a task is evaluated with each of its templates; the reported number is the test
score of the template that did best on the validation split (the mean over templates is reported
too); a category's score is the mean of its tasks' scores. A category is "held out" when the
training mixture contained none of its tasks.

Shapes used throughout (template ids are strings, as they are JSON keys in report.json):
  per_template = {"0": {"validation": {"accuracy": 60.0}, "test": {"accuracy": 55.0}}, "1": ...}

Example:
  >>> per_template = {"0": {"validation": {"accuracy": 60.0}, "test": {"accuracy": 55.0}},
  ...                 "1": {"validation": {"accuracy": 70.0}, "test": {"accuracy": 50.0}}}
  >>> s = summarize_task("rte", category="nli", metric_names=["accuracy"],
  ...                    per_template=per_template, report_split="test")
  >>> s["best_template"]["template_id"], s["score"], s["score_mean_templates"]
  ('1', 50.0, 52.5)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flanjax.eval import metrics as metrics_lib

Scores = Mapping[str, float]


def mean_over_templates(scores_by_template: Mapping[str, Scores]) -> dict[str, float]:
  """Mean of every metric over templates (a metric missing from a template is an error).

  Example:
    >>> mean_over_templates({"0": {"bleu": 10.0}, "1": {"bleu": 20.0}})
    {'bleu': 15.0}
  """
  if not scores_by_template:
    raise ValueError("mean_over_templates: no templates were scored")
  keys = None
  for template_id, scores in scores_by_template.items():
    if keys is None:
      keys = list(scores)
    elif set(scores) != set(keys):
      raise ValueError(
        f"template {template_id!r} has metrics {sorted(scores)}, others have {sorted(keys)}"
      )
  return {k: float(np.mean([s[k] for s in scores_by_template.values()])) for k in keys}


def _template_order(template_id: str):
  # Numeric ids sort numerically ("2" < "10"); ties in best-template selection go to the first.
  return (0, int(template_id), "") if str(template_id).isdigit() else (1, 0, str(template_id))


def select_best_template(selection_scores: Mapping[str, Scores], key: str) -> str:
  """The template id with the highest `key` on the selection split (ties: the lowest id).

  Example:
    >>> select_best_template({"0": {"accuracy": 70.0}, "1": {"accuracy": 70.0},
    ...                       "2": {"accuracy": 40.0}}, "accuracy")
    '0'
  """
  if not selection_scores:
    raise ValueError("select_best_template: no templates were scored")
  missing = [t for t, s in selection_scores.items() if key not in s]
  if missing:
    raise ValueError(f"metric {key!r} missing for template(s) {missing}")
  ordered = sorted(selection_scores, key=_template_order)
  return max(ordered, key=lambda t: selection_scores[t][key])  # max keeps the first of ties


def summarize_task(
  name: str,
  *,
  category: str,
  metric_names: Sequence[str],
  per_template: Mapping[str, Mapping[str, Scores]],
  report_split: str,
  selection_split: str = "validation",
) -> dict[str, Any]:
  """One task's numbers: per template, mean over templates and best template (FLAN).

  The best template is chosen on `selection_split` and reported on `report_split`; when the task
  has no `selection_split` scores (or they are the same split) it is chosen on the report split
  itself, and `best_template["selected_on"]` says so.
  """
  key = metrics_lib.primary_key(list(metric_names))
  per_template = {str(t): dict(v) for t, v in per_template.items()}
  report_scores = {t: v[report_split] for t, v in per_template.items() if report_split in v}
  if not report_scores:
    raise ValueError(f"task {name!r}: no template was scored on split {report_split!r}")
  if len(report_scores) != len(per_template):
    missing = sorted(set(per_template) - set(report_scores))
    raise ValueError(f"task {name!r}: templates {missing} have no {report_split!r} scores")
  selection_scores = {
    t: v[selection_split] for t, v in per_template.items() if selection_split in v
  }
  selected_on = selection_split
  if len(selection_scores) != len(report_scores):
    selection_scores, selected_on = report_scores, report_split
  best = select_best_template(selection_scores, key)
  mean_scores = mean_over_templates(report_scores)
  return {
    "name": name,
    "category": category,
    "metrics": list(metric_names),
    "primary_metric": key,
    "split": report_split,
    "per_template": per_template,
    "mean_over_templates": mean_scores,
    "best_template": {
      "template_id": best,
      "selected_on": selected_on,
      # True when no split apart from the reported one existed to choose on: optimistic.
      "selected_on_report_split": selected_on == report_split,
      "scores": dict(report_scores[best]),
    },
    "score": float(report_scores[best][key]),
    "score_mean_templates": float(mean_scores[key]),
    "error": None,
  }


def failed_task(
  name: str, *, category: str, metric_names: Sequence[str], error: str, report_split: str
) -> dict[str, Any]:
  """The entry of a task whose evaluation raised: kept in the report, left out of means."""
  return {
    "name": name,
    "category": category,
    "metrics": list(metric_names),
    "primary_metric": None,
    "split": report_split,
    "per_template": {},
    "mean_over_templates": {},
    "best_template": None,
    "score": None,
    "score_mean_templates": None,
    "error": error,
  }


def aggregate_categories(
  task_summaries: Iterable[Mapping[str, Any]], heldout_categories: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
  """Per category: the mean of its tasks' scores (best template, and mean over templates).

  Tasks whose evaluation failed are listed under `failed_tasks` and left out of the means; a
  category whose tasks all failed has score None.

  Example:
    >>> tasks = [{"name": "rte", "category": "nli", "primary_metric": "accuracy", "score": 60.0,
    ...           "score_mean_templates": 50.0, "error": None},
    ...          {"name": "cb", "category": "nli", "primary_metric": "accuracy", "score": 80.0,
    ...           "score_mean_templates": 70.0, "error": None}]
    >>> c = aggregate_categories(tasks, heldout_categories=["nli"])["nli"]
    >>> c["heldout"], c["score"], c["score_mean_templates"], c["metric"]
    (True, 70.0, 60.0, 'accuracy')
  """
  heldout = set(heldout_categories)
  grouped: dict[str, list[Mapping[str, Any]]] = {}
  for summary in task_summaries:
    grouped.setdefault(summary["category"], []).append(summary)
  categories = {}
  for category in sorted(grouped):
    tasks = grouped[category]
    ok = [t for t in tasks if t.get("error") is None]
    metric_keys = sorted({t["primary_metric"] for t in ok})
    categories[category] = {
      "heldout": category in heldout,
      "tasks": [t["name"] for t in tasks],
      "failed_tasks": [t["name"] for t in tasks if t.get("error") is not None],
      "metric": "/".join(metric_keys) if metric_keys else None,
      "score": float(np.mean([t["score"] for t in ok])) if ok else None,
      "score_mean_templates": (
        float(np.mean([t["score_mean_templates"] for t in ok])) if ok else None
      ),
      # Accuracy of a uniform guess among the options, when every task's metric allows one.
      "chance": (
        float(np.mean([t["chance"] for t in ok]))
        if ok and all(t.get("chance") is not None for t in ok)
        else None
      ),
    }
  return categories


def heldout_categories(
  train_categories: Iterable[str], eval_categories: Iterable[str]
) -> list[str]:
  """Evaluated categories the training mixture never saw.

  Example:
    >>> heldout_categories(["sentiment", "paraphrase"], ["sentiment", "natural_language_inference"])
    ['natural_language_inference']
  """
  seen = set(train_categories)
  return sorted({c for c in eval_categories if c not in seen})
