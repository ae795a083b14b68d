"""Benchmark roll-ups of an eval report, and side-by-side comparison of several reports.

`benchmark_summary(report)` rolls the per-task scores of the held-out benchmarks up the way
their papers report them: MMLU per subject, per group (STEM, humanities, social sciences,
other) and overall; BBH per task, per half (NLP, algorithmic) and the mean; MGSM per language
and the mean. `compare(paths, out_dir)` puts any reports side by side (compare.md, compare.png).

>>> mmlu = benchmark_summary(report)["mmlu_5shot"]                         # doctest: +SKIP
>>> mmlu["score"], mmlu["groups"]["stem"]["score"]                          # doctest: +SKIP
(35.9, 30.2)
>>> compare(["w/eval/step_1000", "runs/hf_eval/eval/hf_flan-t5-base"], "cmp")  # doctest: +SKIP
{'labels': ['w/step_1000', 'hf_eval/hf_flan-t5-base'], 'rows': [...], ...}

Headline numbers. MMLU: the mean over every test question (Hendrycks et al.'s `evaluate.py` and
lm-evaluation-harness's group score weight subjects by size); the mean over subjects is kept as
`mean_over_tasks`. BBH and MGSM: the mean over tasks / languages (each the same weight).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

_BENCHMARK_PREFIXES = ("mmlu", "bbh", "mgsm")


def _tables():
  # Lazy: the tables live on the data side (importing it loads TensorFlow), needed only when a
  # report lacks its stored "benchmarks" roll-up.
  from flanjax.data import benchmarks_tables

  return benchmarks_tables


def _examples(task: Mapping[str, Any]) -> int:
  """Examples behind a task's score (its reported split, best template)."""
  counts = task.get("num_examples", {}).get(task.get("split"), {})
  best = (task.get("best_template") or {}).get("template_id")
  return int(counts.get(best, 0)) if best is not None else 0


def _roll_up(members: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """Mean over tasks and mean over examples of {member: task entry} (failed tasks left out)."""
  ok = {m: t for m, t in members.items() if t.get("error") is None and t.get("score") is not None}
  weights = {m: _examples(t) for m, t in ok.items()}
  total = sum(weights.values())
  return {
    "mean_over_tasks": sum(t["score"] for t in ok.values()) / len(ok) if ok else None,
    "mean_over_examples": (
      sum(t["score"] * weights[m] for m, t in ok.items()) / total if total else None
    ),
    "num_tasks": len(ok),
    "num_examples": total,
  }


def benchmark_summary(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Per benchmark and mode present in `report["tasks"]` (e.g. "mmlu_5shot", "bbh_cot"):
  `score` (the headline), `mean_over_tasks`, `mean_over_examples`, `groups` {group: the same
  numbers}, `members` {subject/task/language: score}, `missing` members, `failed` members and
  `complete` (every member scored). Store it as `report["benchmarks"]`.

  >>> t = lambda s, n: {"score": s, "error": None, "split": "test",
  ...                   "best_template": {"template_id": "0"}, "num_examples": {"test": {"0": n}}}
  >>> s = benchmark_summary({"tasks": {"mmlu_anatomy_0shot": t(50.0, 100),
  ...                                  "mmlu_astronomy_0shot": t(20.0, 300)}})["mmlu_0shot"]
  >>> s["score"], s["mean_over_tasks"], s["groups"]["stem"]["score"], s["complete"]
  (27.5, 35.0, 20.0, False)
  """
  names = report.get("tasks", {})
  if not any(name.partition("_")[0] in _BENCHMARK_PREFIXES for name in names):
    return {}  # no benchmark task: the tables (and TensorFlow) are not imported
  tables = _tables()
  found: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
  for name, task in report.get("tasks", {}).items():
    parsed = tables.parse_task_name(name)
    if parsed is not None:
      benchmark, member, mode = parsed
      found.setdefault((benchmark, mode), {})[member] = task
  summary = {}
  for (benchmark, mode), members in sorted(found.items()):
    headline = "mean_over_examples" if benchmark == "mmlu" else "mean_over_tasks"
    group_of = tables.GROUPS[benchmark]
    groups = {}
    for group in tables.GROUP_NAMES[benchmark]:
      numbers = _roll_up({m: t for m, t in members.items() if group_of[m] == group})
      groups[group] = {**numbers, "score": numbers[headline]}
    overall = _roll_up(members)
    failed = sorted(m for m, t in members.items() if t.get("error") is not None)
    summary[f"{benchmark}_{mode}"] = {
      **overall,
      "score": overall[headline],
      "headline": headline,
      "groups": groups,
      "members": {m: members[m].get("score") for m in sorted(members)},
      "missing": [m for m in tables.MEMBERS[benchmark] if m not in members],
      "failed": failed,
      "complete": len(members) == len(tables.MEMBERS[benchmark]) and not failed,
    }
  return summary


def render_benchmarks(summary: Mapping[str, Mapping[str, Any]]) -> str:
  """A markdown section of `benchmark_summary`'s numbers ("" when there are none).

  >>> print(render_benchmarks({"bbh_cot": {"score": 30.0, "headline": "mean_over_tasks",
  ...   "mean_over_tasks": 30.0, "num_tasks": 27, "num_examples": 540, "complete": True,
  ...   "groups": {"nlp": {"score": 35.0}, "algorithmic": {"score": 26.0}}}}).splitlines()[-1])
  | bbh_cot | 30.00 | mean over tasks | 27 | 540 | nlp 35.00, algorithmic 26.00 |
  """
  if not summary:
    return ""
  lines = [
    "## Held-out benchmarks",
    "",
    "| benchmark | score | headline | tasks | examples | groups |",
    "| --- | ---: | --- | ---: | ---: | --- |",
  ]
  for name, entry in summary.items():
    groups = ", ".join(f"{g} {_fmt(n['score'])}" for g, n in entry["groups"].items())
    note = "" if entry["complete"] else " (incomplete)"
    lines.append(
      f"| {name}{note} | {_fmt(entry['score'])} | {entry['headline'].replace('_', ' ')} | "
      f"{entry['num_tasks']} | {entry['num_examples']} | {groups or '—'} |"
    )
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- compare
def find_reports(path: str | pathlib.Path) -> list[pathlib.Path]:
  """report.json files named by `path`: the file, a folder holding one, an eval dir (its
  `step_*` / `hf_*` folders, by step), or a workdir (its `eval/`)."""
  path = pathlib.Path(path)
  if path.is_file():
    return [path]
  if (path / "report.json").is_file():
    return [path / "report.json"]
  if (path / "eval").is_dir():
    path = path / "eval"
  found = sorted(path.glob("*/report.json"), key=lambda p: _order(p.parent.name))
  if not found:
    raise FileNotFoundError(
      f"{path}: no report.json (expected a report.json, an eval/step_<N>/ folder, an eval dir "
      "or a workdir)"
    )
  return found


def _order(name: str) -> tuple:
  step = name.removeprefix("step_")
  return (0, int(step), "") if step.isdigit() else (1, 0, name)


def _label(path: pathlib.Path) -> str:
  """`W/eval/step_100/report.json` -> "W/step_100"; `X/report.json` -> "X"."""
  folder = path.parent
  if folder.parent.name == "eval" and folder.parent.parent.name:
    return f"{folder.parent.parent.name}/{folder.name}"
  return folder.name or str(path)


def _fmt(value: float | None) -> str:
  return (
    "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
  )


def _rows(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One row per category, then per benchmark (its headline, MMLU's mean over subjects, its
  groups): scores per report. A benchmark's own category rows are its benchmark rows."""
  summaries = [report.get("benchmarks") or benchmark_summary(report) for report in reports]
  benchmark_names = {name for summary in summaries for name in summary}
  rows: dict[str, dict[str, Any]] = {}

  def row(label: str, kind: str) -> dict[str, Any]:
    return rows.setdefault(label, {"label": label, "kind": kind, "scores": {}, "heldout": {}})

  for index, report in enumerate(reports):
    for name, category in report.get("categories", {}).items():
      if name not in benchmark_names:
        row(name, "category")["scores"][index] = category.get("score")
        row(name, "category")["heldout"][index] = bool(category.get("heldout"))
  for index, summary in enumerate(summaries):
    for name, entry in sorted(summary.items()):
      headline = row(name, "benchmark")
      headline["scores"][index] = entry["score"]
      headline["heldout"][index] = True
      headline["complete"] = headline.get("complete", True) and entry["complete"]
      if entry["headline"] != "mean_over_tasks":
        row(f"{name} / mean over subjects", "group")["scores"][index] = entry["mean_over_tasks"]
      for group, numbers in entry["groups"].items():
        row(f"{name} / {group}", "group")["scores"][index] = numbers["score"]
  return [{**r, "scores": [r["scores"].get(i) for i in range(len(reports))]} for r in rows.values()]


def render_compare(labels: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
  """compare.md: one column per report, deltas against the first, held-out rows in bold."""
  lines = [
    "# Comparison",
    "",
    "Scores 0-100. Category: mean over its tasks of the best template. Benchmark (MMLU, BBH, "
    "MGSM per prompting mode): MMLU the mean over questions, BBH and MGSM the mean over tasks; "
    "indented rows are its groups. Columns after the first show the delta against the first. "
    "**Bold** rows were held out of training (in every report that has them; ‡ in some). "
    "— = not in that report; * = a benchmark with missing or failed members.",
    "",
    "| | " + " | ".join(labels) + " |",
    "| --- |" + " ---: |" * len(labels),
  ]
  for row in rows:
    heldout = list(row["heldout"].values())
    name = row["label"] + ("" if row.get("complete", True) else " *")
    if heldout and all(heldout):
      name = f"**{name}**"
    elif any(heldout):
      name = f"{name} ‡"
    if row["kind"] == "group":
      name = f"&nbsp;&nbsp;{name}"
    first = row["scores"][0]
    cells = [_fmt(first)]
    for score in row["scores"][1:]:
      delta = "" if score is None or first is None else f" ({score - first:+.2f})"
      cells.append(_fmt(score) + delta)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_compare(labels: Sequence[str], rows: Sequence[Mapping[str, Any]], path) -> None:
  """compare.png: grouped bars (one colour per report) per category and benchmark headline."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  shown = [r for r in rows if r["kind"] != "group"]
  width = 0.8 / max(1, len(labels))
  fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(shown) * max(1, len(labels))), 4.8))
  for i, label in enumerate(labels):
    xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(shown))]
    values = [r["scores"][i] for r in shown]
    bars = ax.bar(xs, [0.0 if v is None else v for v in values], width, label=label)
    for bar, value in zip(bars, values, strict=True):
      text = "—" if value is None else f"{value:.1f}"
      ax.annotate(
        text,
        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
        ha="center",
        va="bottom",
        fontsize=6,
      )
  ax.set_xticks(range(len(shown)))
  ax.set_xticklabels(
    [
      r["label"] + (" (held out)" if r.get("heldout") and all(r["heldout"].values()) else "")
      for r in shown
    ],
    rotation=30,
    ha="right",
    fontsize=7,
  )
  ax.set_ylabel("score, 0-100")
  ax.set_title("Comparison per category and benchmark")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def compare(report_paths_or_eval_dirs: Sequence[str], out_dir: str | pathlib.Path) -> dict:
  """Writes `out_dir/compare.{md,png,json}` for the reports named (see `find_reports`); any
  mix of FLAN and benchmark reports. Returns the comparison as a dict (labels, rows, paths)."""
  paths = [p for given in report_paths_or_eval_dirs for p in find_reports(given)]
  if not paths:
    raise ValueError("compare needs at least one report")
  reports = [json.loads(p.read_text()) for p in paths]
  labels, seen = [], {}
  for path in paths:
    label = _label(path)
    seen[label] = seen.get(label, 0) + 1
    labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
  rows = _rows(reports)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files = {ext: out / f"compare.{ext}" for ext in ("md", "png", "json")}
  files["md"].write_text(render_compare(labels, rows))
  plot_compare(labels, rows, files["png"])
  result = {
    "labels": labels,
    "reports": [str(p) for p in paths],
    "rows": rows,
    "files": {k: str(v) for k, v in files.items()},
  }
  files["json"].write_text(json.dumps(result, indent=2) + "\n")
  return result
