"""benchmark_summary roll-ups on hand-built reports, and compare() on two reports side by side."""

import doctest
import json

import pytest

from flanjax.data import benchmarks_tables
from flanjax.eval import compare as compare_lib
from flanjax.eval import report as report_lib


def _task(name, category, score, num_examples=10, metric="accuracy", error=None):
  if error:
    return {"name": name, "category": category, "score": None, "error": error, "split": "test"}
  return {
    "name": name,
    "category": category,
    "primary_metric": metric,
    "metrics": [metric],
    "split": "test",
    "score": score,
    "score_mean_templates": score,
    "error": None,
    "best_template": {"template_id": "0", "selected_on": "test"},
    "num_examples": {"test": {"0": num_examples}},
  }


def _benchmark_report(mmlu_score, step=None):
  tasks = []
  for subject, group in benchmarks_tables.MMLU_GROUPS.items():
    score = mmlu_score + (10.0 if group == "stem" else 0.0)
    tasks.append(
      _task(f"mmlu_{subject}_5shot", "mmlu_5shot", score, 100 if group == "stem" else 50)
    )
  for task, half in benchmarks_tables.BBH_HALVES.items():
    tasks.append(_task(f"bbh_{task}_cot", "bbh_cot", 40.0 if half == "nlp" else 20.0, 25))
  tasks.append(_task("mgsm_en_8shot", "mgsm_8shot", 8.0, metric="accuracy"))
  tasks.append(_task("mgsm_de_8shot", "mgsm_8shot", None, error="ValueError: boom"))
  return report_lib.build_report(
    tasks, split="test", heldout_categories=["mmlu_5shot", "bbh_cot", "mgsm_8shot"], step=step
  )


def test_doctests():
  assert doctest.testmod(compare_lib).failed == 0


def test_benchmark_summary_rolls_up_like_the_papers():
  summary = compare_lib.benchmark_summary(_benchmark_report(30.0))
  mmlu = summary["mmlu_5shot"]
  # STEM: 18 subjects x 100 questions at 40; the other 39 subjects x 50 questions at 30.
  assert mmlu["mean_over_examples"] == pytest.approx((18 * 100 * 40 + 39 * 50 * 30) / 3750)
  assert mmlu["mean_over_tasks"] == pytest.approx((18 * 40 + 39 * 30) / 57)
  assert mmlu["score"] == mmlu["mean_over_examples"] and mmlu["headline"] == "mean_over_examples"
  assert mmlu["groups"]["stem"]["score"] == 40.0 and mmlu["groups"]["humanities"]["score"] == 30.0
  assert mmlu["num_examples"] == 3750 and mmlu["complete"] and mmlu["missing"] == []
  bbh = summary["bbh_cot"]
  assert bbh["score"] == pytest.approx((12 * 40 + 15 * 20) / 27)
  assert (bbh["groups"]["nlp"]["score"], bbh["groups"]["algorithmic"]["score"]) == (40.0, 20.0)
  mgsm = summary["mgsm_8shot"]
  assert mgsm["score"] == 8.0 and mgsm["failed"] == ["de"] and not mgsm["complete"]
  assert len(mgsm["missing"]) == 9 and mgsm["groups"] == {}
  assert compare_lib.benchmark_summary({"tasks": {"sst2": _task("sst2", "sentiment", 1.0)}}) == {}


def test_compare_two_reports(tmp_path):
  flan = report_lib.build_report(
    [_task("sst2", "sentiment", 80.0), _task("rte", "natural_language_inference", 60.0)],
    split="test",
    heldout_categories=["natural_language_inference"],
    step=1000,
  )
  step_dir = tmp_path / "run" / "eval" / "step_1000"
  step_dir.mkdir(parents=True)
  (step_dir / "report.json").write_text(json.dumps(flan))
  bench = _benchmark_report(30.0)
  bench["benchmarks"] = compare_lib.benchmark_summary(bench)
  hf_dir = tmp_path / "hf_eval" / "eval" / "hf_flan-t5-base"
  hf_dir.mkdir(parents=True)
  (hf_dir / "report.json").write_text(json.dumps(bench))

  result = compare_lib.compare([str(tmp_path / "run"), str(hf_dir / "report.json")], tmp_path / "c")
  assert result["labels"] == ["run/step_1000", "hf_eval/hf_flan-t5-base"]
  rows = {row["label"]: row["scores"] for row in result["rows"]}
  assert rows["sentiment"] == [80.0, None]
  assert rows["mmlu_5shot"] == [None, pytest.approx(30 + 10 * 1800 / 3750)]  # over questions
  assert rows["mmlu_5shot / mean over subjects"] == [None, pytest.approx((18 * 40 + 39 * 30) / 57)]
  assert rows["bbh_cot / nlp"] == [None, 40.0]
  markdown = (tmp_path / "c" / "compare.md").read_text()
  assert "| | run/step_1000 | hf_eval/hf_flan-t5-base |" in markdown
  assert "| **natural_language_inference** | 60.00 | — |" in markdown  # held out: bold
  assert "| sentiment | 80.00 | — |" in markdown
  assert "| **mgsm_8shot *** | — | 8.00 |" in markdown  # incomplete: *
  assert [r["label"] for r in result["rows"]][2:6] == [
    "bbh_cot",
    "bbh_cot / nlp",
    "bbh_cot / algorithmic",
    "mgsm_8shot",
  ]
  assert (tmp_path / "c" / "compare.png").stat().st_size > 1000

  # Deltas against the first column; an eval dir expands to its reports, in step order.
  later = dict(flan, categories={**flan["categories"]})
  later["categories"]["sentiment"] = {**flan["categories"]["sentiment"], "score": 85.5}
  (tmp_path / "run" / "eval" / "step_200").mkdir()
  (tmp_path / "run" / "eval" / "step_200" / "report.json").write_text(json.dumps(later))
  result = compare_lib.compare([str(tmp_path / "run" / "eval")], tmp_path / "d")
  assert result["labels"] == ["run/step_200", "run/step_1000"]
  markdown = (tmp_path / "d" / "compare.md").read_text()
  assert "| sentiment | 85.50 | 80.00 (-5.50) |" in markdown
  with pytest.raises(FileNotFoundError, match="no report.json"):
    compare_lib.compare([str(tmp_path / "c")], tmp_path / "e")
