"""The FLAN-T5 held-out benchmarks as eval-only FLAN tasks: MMLU, BIG-Bench Hard, MGSM.

Tasks are data: `benchmark_specs()` is the table of `TaskSpec` rows (one task per MMLU subject,
BBH task or MGSM language and prompting mode), `BENCHMARK_MIXTURES` names them in groups; the
registration loop is `mixtures/benchmarks.py`. Each task has a single split, "test", and one
template: the benchmark's own prompt (built by `benchmarks_prompts` from its few-shot material),
so no training mixture can draw a row from it (`check_not_training`).

The files live in the benchmark dir (`../shared/benchmarks`, layout in its README), never in the
data dir: env `FLANJAX_BENCHMARK_DIR` is read when data is read (never at import), or a dir is
bound explicitly (`BenchmarkSource.bind`).

>>> spec = {s.name: s for s in benchmark_specs()}["mmlu_anatomy_5shot"]
>>> spec.category, spec.metrics, spec.options, spec.family
('mmlu_5shot', ('accuracy',), ('A', 'B', 'C', 'D'), 'benchmark')
>>> rows = bind(spec.source, "../shared/benchmarks").load("test")            # doctest: +SKIP
>>> rows[0]["prompt"][:66], rows[0]["answer"]                                 # doctest: +SKIP
('The following are multiple choice questions (with answers) about anatomy.', 'A')
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from flanjax.data import benchmarks_prompts as prompts
from flanjax.data import sources as sources_lib
from flanjax.data.benchmarks_tables import (
  BBH_TASKS,
  BENCHMARK_DIR_ENV,
  BENCHMARK_FAMILY,
  MEMBERS,
  MGSM_LANGUAGES,
  MMLU_LETTERS,
  MMLU_SUBJECTS,
  MODES,
  task_name,
)
from flanjax.data.tasks import TaskSpec

EVAL_SPLIT = "test"
MMLU_SHOTS = {"0shot": 0, "5shot": 5}
MGSM_SHOTS = {"0shot": 0, "8shot": 8}
_lock = threading.Lock()


def resolve_benchmark_dir(benchmark_dir: str | None = None) -> str:
  """`benchmark_dir`, else env FLANJAX_BENCHMARK_DIR (read now); an error naming both if unset."""
  path = benchmark_dir or os.environ.get(BENCHMARK_DIR_ENV) or ""
  if not path:
    raise FileNotFoundError(
      f"no benchmark dir configured: set config.benchmark_dir or env {BENCHMARK_DIR_ENV} "
      "(e.g. ../shared/benchmarks, holding mmlu/, bbh/ and mgsm/)"
    )
  return os.path.abspath(os.path.expanduser(path))


@functools.lru_cache(maxsize=64)
def _read_jsonl(path: str) -> tuple[dict[str, Any], ...]:
  return tuple(sources_lib.read_jsonl(path))


@functools.lru_cache(maxsize=64)
def _read_text(path: str) -> str:
  with open(path, encoding="utf-8") as handle:
    return handle.read()


def _rows(folder: str, file: str, key: str, value: str, fields: Sequence[str]) -> list[dict]:
  """The rows of `folder/file` whose `key` is `value`, each checked for `fields`."""
  path = os.path.join(folder, file)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: the benchmark dir must hold {file} (see README)")
  rows = []
  for line, row in enumerate(_read_jsonl(path), start=1):
    if row.get(key) != value:
      continue
    missing = [f for f in fields if f not in row]
    if missing:
      raise ValueError(f"{path}: row {line} ({key}={value!r}) has no field(s) {missing}")
    rows.append(row)
  if not rows:
    raise ValueError(f"{path}: no row with {key}={value!r}")
  return rows


# ----------------------------------------------------------------------------- record builders
def mmlu_records(subject: str, shots: int, folder: str) -> list[dict[str, Any]]:
  """Test rows of one subject, each with `prompt` (its `dev` rows as the exemplars)."""
  fields = ("question", *MMLU_LETTERS, "answer")
  exemplars = _rows(folder, "dev.jsonl", "subject", subject, fields)[:shots]
  if len(exemplars) < shots:
    raise ValueError(f"{folder}/dev.jsonl: {subject} has {len(exemplars)} rows, {shots}-shot")
  rows = _rows(folder, "test.jsonl", "subject", subject, fields)
  for line, row in enumerate(rows, start=1):
    if row["answer"] not in MMLU_LETTERS:
      raise ValueError(f"{folder}/test.jsonl: {subject} row {line}: answer {row['answer']!r}")
  return [{**row, "prompt": prompts.mmlu_prompt(subject, exemplars, row)} for row in rows]


def bbh_records(task: str, cot: bool, folder: str) -> list[dict[str, Any]]:
  """Test rows of one BBH task, each with `prompt` from `cot-prompts/<task>.txt`."""
  path = os.path.join(folder, "cot-prompts", f"{task}.txt")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: BBH needs its 3-shot prompt files (see README)")
  prompt = prompts.parse_bbh_prompt(_read_text(path), path)
  rows = _rows(folder, "test.jsonl", "task", task, ("input", "target"))
  return [{**row, "prompt": prompts.bbh_prompt(prompt, row["input"], cot)} for row in rows]


def mgsm_records(lang: str, shots: int, folder: str) -> list[dict[str, Any]]:
  """Test rows of one language, each with `prompt` (native chain-of-thought exemplars)."""
  exemplars = sorted(
    _rows(folder, "exemplars.jsonl", "lang", lang, ("id", "q", "a")), key=lambda e: int(e["id"])
  )
  rows = _rows(folder, "test.jsonl", "lang", lang, ("question", "answer"))
  return [
    {
      **row,
      "answer": str(row["answer"]),
      "prompt": prompts.mgsm_prompt(exemplars, row["question"], shots),
    }
    for row in rows
  ]


# ----------------------------------------------------------------------------- the source
class BenchmarkSource:
  """One benchmark task's rows, read from `<benchmark dir>/<benchmark>/` when first loaded.

  `build(folder) -> records` makes the rows (prompt included); the benchmark dir is `root` when
  bound, else env FLANJAX_BENCHMARK_DIR at read time. Only split: "test".
  >>> source = BenchmarkSource("mmlu", "mmlu_anatomy_0shot", lambda folder: [])
  >>> source.splits, source
  (('test',), BenchmarkSource($FLANJAX_BENCHMARK_DIR/mmlu: mmlu_anatomy_0shot))
  """

  _cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

  def __init__(
    self, benchmark: str, key: str, build: Callable[[str], list[dict]], root: str | None = None
  ):
    self.benchmark = benchmark
    self.key = key
    self.build = build
    self.root = root

  def __repr__(self):
    root = self.root or f"${BENCHMARK_DIR_ENV}"
    return f"BenchmarkSource({root}/{self.benchmark}: {self.key})"

  def bind(self, directory: str | os.PathLike | None) -> BenchmarkSource:
    """Reads under `directory` when it holds `<benchmark>/`; any other dir (the context's data
    dir) leaves the source reading the env's benchmark dir."""
    if directory is None or not os.path.isdir(os.path.join(directory, self.benchmark)):
      return self
    return BenchmarkSource(self.benchmark, self.key, self.build, os.fspath(directory))

  def folder(self) -> str:
    return os.path.join(resolve_benchmark_dir(self.root), self.benchmark)

  @property
  def splits(self) -> tuple[str, ...]:
    return (EVAL_SPLIT,)

  def is_available(self) -> bool:
    try:
      return os.path.isdir(self.folder())
    except FileNotFoundError:
      return False

  def load(self, split: str) -> list[dict[str, Any]]:
    if split != EVAL_SPLIT:
      raise ValueError(f"{self!r}: no split {split!r}; a benchmark has only {EVAL_SPLIT!r}")
    folder = self.folder()
    if not os.path.isdir(folder):
      raise FileNotFoundError(
        f"benchmark folder {folder} not found: config.benchmark_dir / env {BENCHMARK_DIR_ENV} "
        f"must name the dir holding mmlu/, bbh/ and mgsm/ (e.g. ../shared/benchmarks)"
      )
    with _lock:
      if (folder, self.key) not in self._cache:
        self._cache[(folder, self.key)] = self.build(folder)
      return self._cache[(folder, self.key)]

  def peek(self, split: str) -> dict[str, Any] | None:
    return self.load(split)[0] if split == EVAL_SPLIT else None

  def count(self, split: str) -> int:
    return len(self.load(split)) if split == EVAL_SPLIT else 0


# ----------------------------------------------------------------------------- the task table
def _spec(benchmark: str, member: str, mode: str, build, **fields: Any) -> TaskSpec:
  name = task_name(benchmark, member, mode)
  return TaskSpec(
    name,
    BenchmarkSource(benchmark, name, build),
    category=f"{benchmark}_{mode}",
    input_inversion=False,
    selection_rows=0,
    family=BENCHMARK_FAMILY,
    **fields,
  )


def benchmark_specs() -> list[TaskSpec]:
  """Every benchmark task: MMLU subjects x {0shot, 5shot} (rank classification over A-D, no
  OPTIONS block), BBH tasks x {direct, cot} and MGSM languages x {0shot, 8shot} (greedy
  decoding, answers extracted by the `bbh_*_em` / `mgsm_accuracy` metrics)."""
  specs = []
  for mode, shots in MMLU_SHOTS.items():
    for subject in MMLU_SUBJECTS:
      specs.append(
        _spec(
          "mmlu",
          subject,
          mode,
          functools.partial(mmlu_records, subject, shots),
          templates=[("{prompt}", "{answer}")],
          metrics=("accuracy",),
          options=MMLU_LETTERS,
          add_options=False,
        )
      )
  for mode in MODES["bbh"]:
    for task in BBH_TASKS:
      specs.append(
        _spec(
          "bbh",
          task,
          mode,
          functools.partial(bbh_records, task, mode == "cot"),
          templates=[("{prompt}", "{target}")],
          metrics=(f"bbh_{mode}_em",),
        )
      )
  for mode, shots in MGSM_SHOTS.items():
    for lang in MGSM_LANGUAGES:
      specs.append(
        _spec(
          "mgsm",
          lang,
          mode,
          functools.partial(mgsm_records, lang, shots),
          templates=[("{prompt}", "{answer}")],
          metrics=("mgsm_accuracy",),
        )
      )
  return specs


def _mode_tasks(benchmark: str, *modes: str) -> tuple[str, ...]:
  return tuple(task_name(benchmark, m, mode) for mode in modes for m in MEMBERS[benchmark])


# Eval-only mixtures: `<benchmark>_<mode>` per prompting mode, `<benchmark>` for the paper's
# setting(s) (MMLU 5-shot, BBH direct and CoT, MGSM 8-shot CoT), `benchmarks` for everything.
BENCHMARK_MIXTURES: dict[str, tuple[str, ...]] = {
  **{f"{b}_{mode}": _mode_tasks(b, mode) for b, modes in MODES.items() for mode in modes},
  "mmlu": _mode_tasks("mmlu", "5shot"),
  "bbh": _mode_tasks("bbh", "direct", "cot"),
  "mgsm": _mode_tasks("mgsm", "8shot"),
  "benchmarks": tuple(s for b, modes in MODES.items() for s in _mode_tasks(b, *modes)),
}


def is_benchmark_task(name: str) -> bool:
  """Whether a registered FLAN task is a held-out benchmark task (family "benchmark")."""
  from flanjax.data import tasks as tasks_lib

  return tasks_lib.is_flan_task(name) and tasks_lib.get_task_info(name).family == BENCHMARK_FAMILY


def check_not_training(context: Any, mixture: str) -> None:
  """Raises ValueError when `mixture` (or task) holds a benchmark task: they are eval only.

  Call before a training run prepares its workdir (a benchmark task has no "train" split, so
  the batch iterator would also refuse it, later and less clearly).
  """
  held_out = [n for n in context.task_names(mixture) if is_benchmark_task(n)]
  if held_out:
    raise ValueError(
      f"config.mixture={mixture!r} holds held-out benchmark task(s) {held_out[:3]}"
      f"{' ...' if len(held_out) > 3 else ''}: benchmarks are evaluation only; train on a "
      "FLAN mixture (e.g. flan_mini) and put benchmark mixtures in config.eval_mixtures"
    )


def counts(benchmark_dir: str | None = None) -> dict[str, int]:
  """Test rows per benchmark in a benchmark dir: `{"mmlu": 14042, "bbh": 6511, "mgsm": 2750}`."""
  root = resolve_benchmark_dir(benchmark_dir)
  return {b: len(_read_jsonl(os.path.join(root, b, "test.jsonl"))) for b in MODES}


def exemplar_answers(benchmark_dir: str | None = None) -> list[int]:
  """MGSM's `EXEMPLAR_NUMBER_ANSWERS` (the 8 exemplars' answers, the same in every language)."""
  path = os.path.join(resolve_benchmark_dir(benchmark_dir), "mgsm", "exemplar_answers.json")
  with open(path, encoding="utf-8") as handle:
    return [int(v) for v in json.load(handle)["EXEMPLAR_NUMBER_ANSWERS"]]
