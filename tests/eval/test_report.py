"""report.md and report.png agree with report.json; held-out categories are marked."""

import doctest
import json
import re

from matplotlib import image as mpimg

from flanjax.eval import report as report_lib
from flanjax.eval import scoring


def _summaries():
  def task(name, category, val, test, metric="accuracy"):
    per_template = {
      str(i): {"validation": {metric: v}, "test": {metric: t}}
      for i, (v, t) in enumerate(zip(val, test, strict=True))
    }
    return scoring.summarize_task(
      name, category=category, metric_names=[metric], per_template=per_template, report_split="test"
    )

  return [
    task("rte", "natural_language_inference", [50.0, 70.0], [61.234, 55.5]),
    task("cb", "natural_language_inference", [10.0, 5.0], [81.111, 90.0]),
    task("sst2", "sentiment", [90.0], [88.888]),
    task("multi30k", "translation", [1.0, 3.0, 2.0], [10.0, 20.0, 30.0], metric="bleu"),
    scoring.failed_task(
      "copa",
      category="commonsense",
      metric_names=["accuracy"],
      error="RuntimeError: | boom",
      report_split="test",
    ),
  ]


def _md_rows(markdown, header_start):
  lines = markdown.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
  rows = []
  for line in lines[start + 2 :]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
  return rows


def test_markdown_numbers_equal_json(tmp_path):
  report = report_lib.build_report(
    _summaries(), split="test", step=7, heldout_categories=["natural_language_inference"]
  )
  paths = report_lib.write_report(report, tmp_path)
  loaded = json.loads(paths["json"].read_text())
  markdown = paths["md"].read_text()
  category_rows = _md_rows(markdown, "| category |")
  assert [r[0] for r in category_rows] == list(loaded["categories"])
  for name, held, tasks, metric, score, mean in category_rows:
    category = loaded["categories"][name]
    assert held == ("yes" if category["heldout"] else "no")
    assert tasks == ", ".join(category["tasks"])
    if category["score"] is None:
      assert score == "—"
    else:
      assert float(score) == round(category["score"], 2)
      assert float(mean) == round(category["score_mean_templates"], 2)
      assert metric == category["metric"]
  task_rows = _md_rows(markdown, "| task |")
  assert [r[0] for r in task_rows] == list(loaded["tasks"])
  for row in task_rows:
    task = loaded["tasks"][row[0]]
    assert row[2] == task["split"]
    if task["error"]:
      assert row[5] == "failed" and "boom" in row[7]
      continue
    assert row[3] == task["primary_metric"]
    assert float(row[5]) == round(task["score"], 2)
    assert float(row[6]) == round(task["score_mean_templates"], 2)
    assert row[4] == task["best_template"]["template_id"] + " (validation)"
    best_scores = dict(part.rsplit(" ", 1) for part in row[7].split(", "))
    assert {k: float(v) for k, v in best_scores.items()} == {
      k: round(v, 2) for k, v in task["best_template"]["scores"].items()
    }
  # The numbers themselves follow the FLAN protocol.
  nli = loaded["categories"]["natural_language_inference"]
  assert nli["score"] == (55.5 + 81.111) / 2
  assert loaded["errors"] == {"copa": "RuntimeError: | boom"}


def test_heldout_category_is_marked(tmp_path):
  report = report_lib.build_report(_summaries(), split="test", heldout_categories=["sentiment"])
  assert report["categories"]["sentiment"]["heldout"] is True
  assert report["categories"]["translation"]["heldout"] is False
  rows = {r[0]: r[1] for r in _md_rows(report_lib.render_markdown(report), "| category |")}
  assert rows == {
    "commonsense": "no",
    "natural_language_inference": "no",
    "sentiment": "yes",
    "translation": "no",
  }


def test_png_bars_then_line_chart_once_there_are_several_evals(tmp_path):
  eval_dir = tmp_path / "eval"
  summaries = _summaries()
  first = report_lib.write_report(
    report_lib.build_report(summaries, split="test", step=100, heldout_categories=["sentiment"]),
    eval_dir / "step_100",
  )
  single_width = mpimg.imread(first["png"]).shape[1]
  summaries[2] = {**summaries[2], "score": 95.0}
  second = report_lib.write_report(
    report_lib.build_report(summaries, split="test", step=200, heldout_categories=["sentiment"]),
    eval_dir / "step_200",
  )
  assert mpimg.imread(second["png"]).shape[1] > single_width  # a second panel: over steps
  history = report_lib.collect_history(eval_dir)
  assert [step for step, _ in history] == [100, 200]
  assert history[1][1]["sentiment"] == 95.0 and "commonsense" not in history[1][1]
  over_steps = report_lib.plot_over_steps(eval_dir)
  assert over_steps.exists() and over_steps.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docstring_examples():
  result = doctest.testmod(report_lib)
  assert result.attempted >= 2 and result.failed == 0


def test_figure_names_the_metric_draws_chance_and_keeps_the_legend_outside():
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  summaries = _summaries()
  for summary in summaries:
    summary["chance"] = 50.0 if summary["name"] in ("rte", "sst2") else None
  summaries[1]["chance"] = 100 / 3  # cb: three options
  report = report_lib.build_report(
    summaries, split="test", heldout_categories=["natural_language_inference"]
  )
  nli = report["categories"]["natural_language_inference"]
  assert nli["chance"] == (50.0 + 100 / 3) / 2
  assert report["categories"]["translation"]["chance"] is None  # BLEU has no chance level
  fig, ax = plt.subplots()
  report_lib._plot_bars(ax, report)
  labels = [t.get_text() for t in ax.get_xticklabels()]
  assert "natural_language_inference (held out)\naccuracy" in labels
  assert "translation\nbleu" in labels
  chance_lines = [c for c in ax.collections if c.get_linestyle() != [(0.0, None)]]
  heights = sorted(float(seg[0][1]) for c in chance_lines for seg in c.get_segments())
  assert heights == sorted([nli["chance"], 50.0])  # nli and sentiment; none for translation
  fig2, ax2 = plt.subplots()
  report_lib._plot_lines(ax2, [(1, {"a": 1.0}), (2, {"a": 2.0})], {"a"})
  anchor = ax2.get_legend().get_bbox_to_anchor().transformed(ax2.transAxes.inverted())
  assert anchor.x0 > 1.0  # the legend sits right of the plot, over no line
  plt.close(fig)
  plt.close(fig2)
