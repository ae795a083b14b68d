"""The evaluation report: report.json (every number), report.md (tables), report.png (charts).

`build_report` assembles task summaries (see `scoring.summarize_task`) into one dict;
`write_report` writes the three files. When the output folder is `.../eval/step_<N>/` and sibling
`step_*` folders hold earlier reports, report.png gets a second panel: category scores over steps.

Example:
  >>> task = {"name": "rte", "category": "nli", "primary_metric": "accuracy", "score": 61.5,
  ...         "split": "test",
  ...         "score_mean_templates": 55.0, "error": None, "metrics": ["accuracy"],
  ...         "best_template": {"template_id": "2", "selected_on": "validation"}}
  >>> report = build_report([task], split="test", heldout_categories=["nli"], step=100)
  >>> print([line for line in render_markdown(report).splitlines() if line.startswith("| nli")][0])
  | nli | yes | rte | accuracy | 61.50 | 55.00 |
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flanjax.eval import metrics as metrics_lib
from flanjax.eval import scoring

_STEP_DIR = re.compile(r"^step_(\d+)$")


def build_report(
  task_summaries: Sequence[Mapping[str, Any]],
  *,
  split: str,
  heldout_categories: Iterable[str] = (),
  step: int | None = None,
  selection_split: str = "validation",
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Everything in one JSON-serialisable dict."""
  heldout = sorted(set(heldout_categories))
  return {
    "step": step,
    "split": split,
    "selection_split": selection_split,
    "heldout_categories": heldout,
    "categories": scoring.aggregate_categories(task_summaries, heldout),
    "tasks": {t["name"]: dict(t) for t in task_summaries},
    "errors": {t["name"]: t["error"] for t in task_summaries if t.get("error")},
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    **dict(extra or {}),
  }


def _fmt(value: float | None) -> str:
  return (
    "—" if value is None or (isinstance(value, float) and math.isnan(value)) else (f"{value:.2f}")
  )


def render_markdown(report: Mapping[str, Any]) -> str:
  """Two tables: one row per category, then one row per task (scores rounded to 2 decimals)."""
  step = report.get("step")
  title = "# Evaluation" + (f" at step {step}" if step is not None else "")
  lines = [
    title,
    "",
    f"Split: `{report['split']}` (a task without it says which split it was scored on). Best "
    f"template chosen on `{report['selection_split']}`, or, for a task without one, on FLAN's "
    "`selection` split (the last training rows, never trained on); each row names its split"
    + (
      ", and rows marked ⚠ had no split apart from the reported one, so their choice is optimistic"
      if any(_optimistic(t) for t in report["tasks"].values())
      else ""
    )
    + ". Held-out categories were not in the training mixture. Category score: mean over its "
    "tasks of the best template's score.",
    "",
    "| category | held out? | tasks | metric | score | mean over templates |",
    "| --- | --- | --- | --- | ---: | ---: |",
  ]
  for name, cat in report["categories"].items():
    lines.append(
      f"| {name} | {'yes' if cat['heldout'] else 'no'} | {', '.join(cat['tasks'])} | "
      f"{cat['metric'] or '—'} | {_fmt(cat['score'])} | {_fmt(cat['score_mean_templates'])} |"
    )
  lines += [
    "",
    "## Tasks",
    "",
    "| task | category | split | metric | best template (chosen on) | score "
    "| mean over templates | all metrics (best template) |",
    "| --- | --- | --- | --- | --- | ---: | ---: | --- |",
  ]
  for name, task in report["tasks"].items():
    if task.get("error"):
      lines.append(
        f"| {name} | {task['category']} | {task['split']} | — | — | failed | — | "
        f"{_escape(task['error'])} |"
      )
      continue
    best = task["best_template"]
    all_scores = ", ".join(f"{k} {v:.2f}" for k, v in best.get("scores", {}).items())
    lines.append(
      f"| {name} | {task['category']} | {task['split']} | {task['primary_metric']} | "
      f"{best['template_id']} ({best['selected_on']}"
      f"{' ⚠' if _optimistic(task) else ''}) | {_fmt(task['score'])} | "
      f"{_fmt(task['score_mean_templates'])} | {all_scores} |"
    )
  truncated = {
    name: sum(task.get("truncated", {}).values())
    for name, task in report["tasks"].items()
    if sum(task.get("truncated", {}).values())
  }
  if truncated:
    lines += ["", f"## Truncated inputs (cut to {report.get('input_length')} tokens, EOS kept)", ""]
    lines += [f"- `{name}`: {n} example(s)" for name, n in truncated.items()]
  if report.get("benchmarks"):
    from flanjax.eval import compare

    lines += ["", compare.render_benchmarks(report["benchmarks"]).rstrip()]
  notes = [f"- {metrics_lib.METRIC_NOTES[m]}" for m in _metrics_used(report)]
  if notes:
    lines += ["", "## Metric notes", "", *notes]
  if report.get("errors"):
    lines += ["", "## Errors", ""]
    lines += [f"- `{name}`: {_escape(msg)}" for name, msg in report["errors"].items()]
  return "\n".join(lines) + "\n"


def _optimistic(task: Mapping[str, Any]) -> bool:
  """A best template chosen on the split it reports, among several (one template: no choice)."""
  best = task.get("best_template") or {}
  return bool(best.get("selected_on_report_split")) and len(task.get("per_template", {})) > 1


def _metrics_used(report: Mapping[str, Any]) -> list[str]:
  names = {m for task in report["tasks"].values() for m in task.get("metrics", ())}
  return sorted(names & set(metrics_lib.METRIC_NOTES))


def _escape(text: str) -> str:
  return " ".join(str(text).split()).replace("|", "\\|")


def collect_history(eval_dir: str | os.PathLike) -> list[tuple[int, dict[str, float]]]:
  """(step, {category: score}) for every `eval_dir/step_<N>/report.json`, sorted by step."""
  history = []
  eval_dir = pathlib.Path(eval_dir)
  if not eval_dir.is_dir():
    return history
  for child in eval_dir.iterdir():
    match = _STEP_DIR.match(child.name)
    if not match or not (child / "report.json").is_file():
      continue
    report = json.loads((child / "report.json").read_text())
    history.append(
      (
        int(match.group(1)),
        {
          name: cat["score"]
          for name, cat in report["categories"].items()
          if cat["score"] is not None
        },
      )
    )
  return sorted(history)


def _heldout_set(report: Mapping[str, Any]) -> set[str]:
  return {n for n, c in report["categories"].items() if c["heldout"]}


def _plot_bars(ax, report: Mapping[str, Any]) -> None:
  names = list(report["categories"])
  scores = [report["categories"][n]["score"] for n in names]
  heldout = _heldout_set(report)
  values = [0.0 if s is None else s for s in scores]
  colors = ["tab:orange" if n in heldout else "tab:blue" for n in names]
  bars = ax.bar(range(len(names)), values, color=colors)
  for bar, name, score in zip(bars, names, scores, strict=True):
    if name in heldout:
      bar.set_hatch("//")
    ax.annotate(
      "failed" if score is None else f"{score:.1f}",
      (bar.get_x() + bar.get_width() / 2, bar.get_height()),
      ha="center",
      va="bottom",
      fontsize=8,
    )
  chance_drawn = False
  for bar, name in zip(bars, names, strict=True):
    chance = report["categories"][name].get("chance")
    if chance is not None:
      x0, width = bar.get_x(), bar.get_width()
      ax.hlines(chance, x0 - 0.1 * width, x0 + 1.1 * width, colors="black", linestyles=":")
      chance_drawn = True
  metrics = [report["categories"][n].get("metric") or "failed" for n in names]
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(
    [
      f"{n}{' (held out)' if n in heldout else ''}\n{metric}"
      for n, metric in zip(names, metrics, strict=True)
    ],
    rotation=30,
    ha="right",
    fontsize=8,
  )
  ax.set_ylabel("score (best template), 0-100")
  step = report.get("step")
  ax.set_title("Per category" + (f", step {step}" if step is not None else ""))
  from matplotlib.lines import Line2D
  from matplotlib.patches import Patch

  handles = [
    Patch(facecolor="tab:orange", hatch="//", label="held out"),
    Patch(facecolor="tab:blue", label="seen in training"),
  ]
  if chance_drawn:
    handles.append(Line2D([], [], color="black", linestyle=":", label="chance (uniform guess)"))
  ax.legend(handles=handles, fontsize=8)


def _plot_lines(ax, history: Sequence[tuple[int, Mapping[str, float]]], heldout: set[str]) -> None:
  categories = sorted({c for _, scores in history for c in scores})
  for category in categories:
    points = [(step, scores[category]) for step, scores in history if category in scores]
    ax.plot(
      [p[0] for p in points],
      [p[1] for p in points],
      marker="o",
      linestyle="--" if category in heldout else "-",
      label=category + (" (held out)" if category in heldout else ""),
    )
  ax.set_xlabel("training step")
  ax.set_ylabel("score (best template)")
  ax.set_title("Scores over steps")
  # Outside the plot area, so that no legend hides the lines.
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_report(
  report: Mapping[str, Any],
  path: str | os.PathLike,
  history: Sequence[tuple[int, Mapping[str, float]]] | None = None,
) -> None:
  """Bar chart per category (held-out bars hatched and labelled) and, with two or more evals in
  `history`, a line chart of category scores over steps."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  with_lines = history is not None and len(history) >= 2
  fig, axes = plt.subplots(
    1, 2 if with_lines else 1, figsize=(15 if with_lines else 7, 4.8), squeeze=False
  )
  _plot_bars(axes[0][0], report)
  if with_lines:
    _plot_lines(axes[0][1], history, _heldout_set(report))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_over_steps(
  eval_dir: str | os.PathLike, out_path: str | os.PathLike | None = None
) -> pathlib.Path:
  """Line chart of category scores over every `eval_dir/step_<N>/report.json`."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  history = collect_history(eval_dir)
  if not history:
    raise FileNotFoundError(f"no step_<N>/report.json under {eval_dir}")
  latest = json.loads(
    (pathlib.Path(eval_dir) / f"step_{history[-1][0]}" / "report.json").read_text()
  )
  out_path = pathlib.Path(out_path or pathlib.Path(eval_dir) / "scores_over_steps.png")
  fig, ax = plt.subplots(figsize=(9, 4.5))
  _plot_lines(ax, history, _heldout_set(latest))
  fig.tight_layout()
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
  """Writes report.json, report.md and report.png under `out_dir`; returns their paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {ext: out_dir / f"report.{ext}" for ext in ("json", "md", "png")}
  tmp = paths["json"].with_suffix(".json.tmp")
  tmp.write_text(json.dumps(report, indent=2, sort_keys=False, default=_json_default) + "\n")
  tmp.replace(paths["json"])
  paths["md"].write_text(render_markdown(report))
  history = None
  if _STEP_DIR.match(out_dir.name):
    history = collect_history(out_dir.parent)
  plot_report(report, paths["png"], history)
  return paths


def _json_default(value):
  # numpy scalars and arrays that slipped into a summary.
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"report value of type {type(value).__name__} is not JSON serialisable")
