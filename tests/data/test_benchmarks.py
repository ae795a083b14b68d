"""The held-out benchmarks as FLAN tasks: exact prompts on the real files, eval-only mixtures."""

import doctest
import json
import os

import pytest
import seqio

import mixtures  # noqa: F401 — registers every task and mixture
from flanjax.data import DataContext, benchmarks, benchmarks_prompts, benchmarks_tables, pipeline
from flanjax.data import tasks as tasks_lib

BENCHMARK_DIR = os.environ.get(benchmarks_tables.BENCHMARK_DIR_ENV, "")
needs_files = pytest.mark.skipif(
  not os.path.isdir(os.path.join(BENCHMARK_DIR, "mmlu")),
  reason="FLANJAX_BENCHMARK_DIR not set to ../shared/benchmarks (make test sets it)",
)


def _rows(*parts):
  with open(os.path.join(BENCHMARK_DIR, *parts), encoding="utf-8") as handle:
    return [json.loads(line) for line in handle if line.strip()]


def _rendered(name):
  rendered = DataContext().rendered_split(name, "test")
  return rendered["inputs"], rendered["targets"], rendered["options"]


def test_doctests():
  for module in (benchmarks_prompts, benchmarks_tables):
    assert doctest.testmod(module).failed == 0


def test_the_tables():
  groups = benchmarks_tables.MMLU_GROUPS
  assert {g: list(groups.values()).count(g) for g in benchmarks_tables.MMLU_GROUP_NAMES} == {
    "stem": 18,
    "humanities": 13,
    "social_sciences": 12,
    "other": 14,
  }
  halves = list(benchmarks_tables.BBH_HALVES.values())
  assert (halves.count("algorithmic"), halves.count("nlp")) == (15, 12)  # 11 + 12 paper tasks
  names = [s.name for s in benchmarks.benchmark_specs()]
  assert len(names) == len(set(names)) == 57 * 2 + 27 * 2 + 11 * 2
  assert all(benchmarks_tables.parse_task_name(n) for n in names)


@needs_files
def test_mmlu_prompts_are_lm_eval_harness_format():
  dev = [r for r in _rows("mmlu", "dev.jsonl") if r["subject"] == "abstract_algebra"]
  test = [r for r in _rows("mmlu", "test.jsonl") if r["subject"] == "abstract_algebra"]
  header = "The following are multiple choice questions (with answers) about abstract algebra.\n\n"

  def block(row):
    return (
      f"{row['question'].strip()}\nA. {row['A']}\nB. {row['B']}\nC. {row['C']}\nD. {row['D']}"
      "\nAnswer:"
    )

  inputs, targets, options = _rendered("mmlu_abstract_algebra_0shot")
  assert len(inputs) == 100 and targets[0] == test[0]["answer"] and options[0] == "A|||B|||C|||D"
  assert inputs[0] == header + block(test[0])
  assert "OPTIONS" not in inputs[0]
  inputs, targets, _ = _rendered("mmlu_abstract_algebra_5shot")
  shots = "".join(f"{block(r)} {r['answer']}\n\n" for r in dev)
  assert inputs[7] == header + shots + block(test[7]) and targets[7] == test[7]["answer"]
  # The first dev row, spelled out once by hand.
  assert inputs[0].startswith(
    header + "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\n"
    "A. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\nStatement 1 |"
  )


@needs_files
def test_bbh_prompts_direct_and_cot():
  rows = [r for r in _rows("bbh", "test.jsonl") if r["task"] == "boolean_expressions"]
  with open(os.path.join(BENCHMARK_DIR, "bbh", "cot-prompts", "boolean_expressions.txt")) as f:
    cot_file = f.read()
  inputs, targets, options = _rendered("bbh_boolean_expressions_direct")
  assert len(inputs) == 250 and targets[3] == rows[3]["target"] and options[3] == ""
  assert inputs[3] == (
    "Evaluate the result of a random Boolean expression.\n\n"
    "Q: not ( ( not not True ) ) is\nA: False\n\n"
    "Q: True and False and not True and True is\nA: False\n\n"
    "Q: not not ( not ( False ) ) is\nA: True\n\n"
    f"Q: {rows[3]['input']}\nA:"
  )
  inputs, _, _ = _rendered("bbh_boolean_expressions_cot")
  file_without_canary = cot_file.split("-----\n", 1)[1].strip()
  assert (
    inputs[3] == f"{file_without_canary}\n\nQ: {rows[3]['input']}\nA: Let's think step by step."
  )
  assert "canary" not in inputs[3] and "-----" not in inputs[3]


@needs_files
def test_every_bbh_prompt_file_parses_to_three_exemplars():
  targets = {}
  for row in _rows("bbh", "test.jsonl"):
    targets.setdefault(row["task"], []).append(row["target"])
  for task in benchmarks_tables.BBH_TASKS:
    path = os.path.join(BENCHMARK_DIR, "bbh", "cot-prompts", f"{task}.txt")
    with open(path) as handle:
      prompt = benchmarks_prompts.parse_bbh_prompt(handle.read(), path)
    assert len(prompt.questions) == 3, task
    # Multiple choice when most targets are "(X)" (movie_recommendation has a stray free answer).
    multiple_choice = sum(t.startswith("(") for t in targets[task]) > len(targets[task]) / 2
    for answer in prompt.answers:  # direct exemplars answer like the targets do
      assert not answer.endswith("."), (task, answer)
      assert answer.startswith("(") == multiple_choice or task == "dyck_languages", (task, answer)


@needs_files
def test_mgsm_native_cot_prompts():
  exemplars = [e for e in _rows("mgsm", "exemplars.jsonl") if e["lang"] == "en"]
  rows = [r for r in _rows("mgsm", "test.jsonl") if r["lang"] == "en"]
  inputs, targets, _ = _rendered("mgsm_en_8shot")
  shots = "".join(f"{e['q']}\n{e['a']}\n\n" for e in exemplars)
  question = f"Question: {rows[0]['question']}\nStep-by-Step Answer:"
  assert inputs[0] == shots + question and targets[0] == "18"
  assert shots.startswith("Question: Roger has 5 tennis balls.")
  inputs, _, _ = _rendered("mgsm_en_0shot")
  assert inputs[0] == question
  inputs, _, _ = _rendered("mgsm_zh_0shot")  # native labels, full-width colons
  assert inputs[0].startswith("问题：") and inputs[0].endswith("\n逐步解答：")


@needs_files
def test_every_task_reads_its_rows():
  counts = {"mmlu": 0, "bbh": 0, "mgsm": 0}
  for spec in benchmarks.benchmark_specs():
    benchmark, _, mode = benchmarks_tables.parse_task_name(spec.name)
    if mode in ("5shot", "cot", "8shot"):
      counts[benchmark] += DataContext().bound_source(spec.name).count("test")
  assert counts == benchmarks.counts() == {"mmlu": 14042, "bbh": 6511, "mgsm": 2750}


def test_no_training_mixture_reaches_a_benchmark_task():
  benchmark_tasks = set(tasks_lib.list_flan_tasks(benchmarks_tables.BENCHMARK_FAMILY))
  assert len(benchmark_tasks) == 190
  plain = [n for n in seqio.MixtureRegistry.names() if "#" not in n]
  assert {"flan_mini", "toy", *benchmarks.BENCHMARK_MIXTURES} <= set(plain)
  for name in plain:
    members = set(DataContext().task_names(name))
    if name in benchmarks.BENCHMARK_MIXTURES:
      assert members <= benchmark_tasks, name
    else:
      assert not members & benchmark_tasks, f"mixture {name} reaches {members & benchmark_tasks}"
  for name in benchmark_tasks:  # eval only: the one split is "test"
    assert DataContext().get(name).splits == ("test",)
  assert len(tasks_lib.CATEGORIES) == 12  # FLAN's clusters are untouched


def test_benchmark_mixtures_cannot_train():
  ctx = DataContext()
  with pytest.raises(ValueError, match="'mmlu': no task has a 'train' split"):
    pipeline.make_batch_iterator(
      ctx, "mmlu", "train", lengths={"inputs": 64, "targets": 8}, batch_size=2
    )
  with pytest.raises(ValueError, match=r"config.mixture='bbh_cot' holds held-out benchmark"):
    benchmarks.check_not_training(ctx, "bbh_cot")
  benchmarks.check_not_training(ctx, "flan_mini_holdout_sentiment")  # a FLAN mixture is fine


def test_missing_benchmark_dir_names_the_variable_and_key(monkeypatch, tmp_path):
  monkeypatch.delenv(benchmarks_tables.BENCHMARK_DIR_ENV, raising=False)
  specs = benchmarks.benchmark_specs()  # building the table reads nothing
  source = specs[0].source
  assert not source.is_available()
  with pytest.raises(FileNotFoundError, match="config.benchmark_dir or env FLANJAX_BENCHMARK_DIR"):
    source.load("test")
  monkeypatch.setenv(benchmarks_tables.BENCHMARK_DIR_ENV, str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"mmlu not found: config.benchmark_dir"):
    source.load("test")
  (tmp_path / "mmlu").mkdir()
  (tmp_path / "mmlu" / "dev.jsonl").write_text('{"subject": "abstract_algebra", "question": 1}\n')
  with pytest.raises(ValueError, match=r"dev.jsonl: row 1 .* has no field\(s\) \['A', 'B'"):
    source.load("test")
  with pytest.raises(ValueError, match="no split 'train'"):
    source.load("train")
