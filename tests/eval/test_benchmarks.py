"""Benchmark answers and scoring: extraction on hand-written outputs, MMLU rank classification
against brute-force scoring (flanjax and HF PyTorch), and evaluate() on every benchmark kind."""

import doctest
import json
import os

import jax
import numpy as np
import pytest

import mixtures  # noqa: F401 — registers the benchmark tasks
from flanjax.config import EvalConfig
from flanjax.data import DataContext, benchmarks_prompts, benchmarks_tables, vocab
from flanjax.eval import answers, compare, evaluate, metrics, rank
from flanjax.eval.tasks import registry_eval_tasks
from flanjax.model.config import T5Config
from flanjax.model.hf import T5Model, save_pretrained

BENCHMARK_DIR = os.environ.get(benchmarks_tables.BENCHMARK_DIR_ENV, "")
needs_files = pytest.mark.skipif(
  not os.path.isdir(os.path.join(BENCHMARK_DIR, "mmlu")),
  reason="FLANJAX_BENCHMARK_DIR not set to ../shared/benchmarks (make test sets it)",
)


@pytest.fixture(autouse=True)
def benchmark_metrics(monkeypatch):
  """The answers' metrics in the evaluator's registry (a no-op once metrics.py lists them)."""
  for name, fn in answers.METRICS.items():
    if name not in metrics.METRICS:
      monkeypatch.setitem(metrics.METRICS, name, fn)
      monkeypatch.setitem(metrics.PRIMARY_KEY, name, answers.PRIMARY_KEY[name])


def _jsonl(*parts):
  with open(os.path.join(BENCHMARK_DIR, *parts), encoding="utf-8") as handle:
    return [json.loads(line) for line in handle if line.strip()]


def test_doctests():
  assert doctest.testmod(answers).failed == 0


def test_bbh_answers_from_hand_written_outputs():
  cot = [
    ("(B)", "Z = A and B = False. So the answer is (B)."),  # multiple choice
    ("(B)", "Let's think step by step. So the answer is B."),  # letter without brackets
    ("(C)", "so the answer is (C) a blue ball. Q: next question ..."),  # option text follows
    ("valid", "The argument holds. So the answer is valid. Q: another. So the answer is invalid."),
    ("] } ]", "We close them in order. So the answer is ] } ]."),  # free form
    ("-219", "(-11) + (-208) = -219. So the answer is -219."),  # numeric
    ("Yes", "So the answer is yes."),  # case
  ]
  wrong = [("(A)", "So the answer is (AB)."), ("12", "the total is 12"), ("False", "")]
  wrong += [("(C)", "C translation of the text"), ("(A)", "So the answer is A dog.")]
  targets, outputs = zip(*cot, strict=True)
  assert answers.bbh_cot_em(targets, outputs) == {"exact_match": 100.0}
  assert answers.bbh_cot_em(*zip(*wrong, strict=True)) == {"exact_match": 0.0}
  direct = [("(A)", "(A)"), ("(A)", "A"), ("(D)", "(D) 03/02/1963"), ("No", "No."), ("8", "8")]
  assert answers.bbh_direct_em(*zip(*direct, strict=True)) == {"exact_match": 100.0}
  assert answers.bbh_direct_em(["(A)", "8"], ["(B)", "8 apples"]) == {"exact_match": 0.0}


def test_mgsm_answers_from_hand_written_outputs():
  cases = [
    ("1234", "So she has 1,234 apples. The answer is 1,234."),  # thousands separator
    ("1234", "She pays 1,234.00 dollars in all."),  # decimals, compared as numbers
    ("18", "16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18 dollars per day!"),  # trailing text
    ("11", "5 + 6 = 11。答案是 11。"),  # other scripts
    ("-3", "The change is -3."),
    ("5", "The answer is 5.\n\nQuestion: 7 + 1? Step-by-Step Answer: 8"),  # invented next shot
  ]
  assert answers.mgsm_accuracy(*zip(*cases, strict=True)) == {"accuracy": 100.0}
  assert answers.mgsm_answer("1,234.50") == 1234.5
  assert answers.mgsm_accuracy(["18", "3"], ["about 17.5", "no idea"]) == {"accuracy": 0.0}
  with pytest.raises(ValueError, match="target 'x' is not a number"):
    answers.mgsm_accuracy(["x"], ["1"])


@needs_files
def test_extraction_reads_every_published_exemplar():
  """The exemplars' own answers: MGSM's last number is EXEMPLAR_NUMBER_ANSWERS in every
  language; every BBH chain of thought scores its own final answer."""
  with open(os.path.join(BENCHMARK_DIR, "mgsm", "exemplar_answers.json")) as handle:
    expected = [float(v) for v in json.load(handle)["EXEMPLAR_NUMBER_ANSWERS"]]
  exemplars = _jsonl("mgsm", "exemplars.jsonl")
  for lang in benchmarks_tables.MGSM_LANGUAGES:
    shots = sorted((e for e in exemplars if e["lang"] == lang), key=lambda e: int(e["id"]))
    assert [answers.mgsm_answer(e["a"]) for e in shots] == expected, lang
  for task in benchmarks_tables.BBH_TASKS:
    with open(os.path.join(BENCHMARK_DIR, "bbh", "cot-prompts", f"{task}.txt")) as handle:
      prompt = benchmarks_prompts.parse_bbh_prompt(handle.read())
    score = answers.bbh_cot_em(prompt.answers, prompt.reasonings)["exact_match"]
    assert score == 100.0, task


# ----------------------------------------------------------------------------- with a model
@pytest.fixture(scope="module")
def spm_context(tmp_path_factory):
  texts = [
    f"{r['question']} {r['A']} {r['B']} {r['C']} {r['D']}" for r in _jsonl("mmlu", "dev.jsonl")
  ]
  texts += [r["input"] for r in _jsonl("bbh", "test.jsonl")[::10]]
  # Latin-script MGSM only: 500 pieces cannot cover every script's characters.
  texts += [r["question"] for r in _jsonl("mgsm", "test.jsonl") if r["lang"] in ("en", "de")]
  path = vocab.train_sentencepiece(texts, 500, str(tmp_path_factory.mktemp("spm") / "spm.model"))
  return DataContext(vocab=path)


@pytest.fixture(scope="module")
def model(spm_context):
  size = spm_context.vocabulary().vocab_size
  config = T5Config.tiny(vocab_size=size + 28, d_model=32, d_kv=8, d_ff=64, num_layers=1)
  return T5Model(config, jax.jit(lambda k: T5Model.init(config, seed=1).params)(0))


def _option_scores(model, input_ids, options, vocabulary):
  """log p(option | input) of each option: one unpadded forward pass per option."""
  scores = []
  for option in options:
    target = list(vocabulary.encode(option)) + [1]
    logits = model.logits([list(input_ids)], [[0] + target[:-1]])  # [1, len(target), vocab]
    log_probs = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
    scores.append(float(sum(log_probs[i, t] for i, t in enumerate(target))))
  return scores


@needs_files
def test_mmlu_rank_classification_is_brute_force_scoring(model, spm_context, tmp_path):
  (task,) = registry_eval_tasks(spm_context, ["mmlu_abstract_algebra_5shot"])
  examples = task.load("test", 6)
  assert all(e.options == ("A", "B", "C", "D") for e in examples)
  assert examples[0].input_text.startswith("The following are multiple choice questions")
  brute = [_option_scores(model, e.input_ids, e.options, task.vocabulary) for e in examples]
  result = rank.rank_classify(
    model,
    [e.input_ids for e in examples],
    [[tuple(task.vocabulary.encode(o)) + (1,) for o in e.options] for e in examples],
  )
  np.testing.assert_allclose(result.scores, brute, atol=1e-4)
  choices = [int(np.argmax(s)) for s in brute]
  assert list(result.choices) == choices
  cfg = EvalConfig(max_examples=6, batch_size=4, input_length=2048, target_length=8)
  report = evaluate.evaluate(model, [task], cfg)
  entry = report["tasks"]["mmlu_abstract_algebra_5shot"]
  expected = 100.0 * np.mean(
    [e.options[c] == e.target for e, c in zip(examples, choices, strict=True)]
  )
  assert entry["score"] == pytest.approx(expected) and entry["truncated"] == {"test": 0}
  assert [s["prediction"] for s in entry["samples"]] == [
    examples[i].options[choices[i]] for i in range(3)
  ]

  # The same scores from HF PyTorch on the exported model.
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  save_pretrained(model, tmp_path / "hf")
  hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
  for example, flanjax_scores in list(zip(examples, brute, strict=True))[:3]:
    hf_scores = []
    for option in example.options:
      labels = torch.tensor([list(task.vocabulary.encode(option)) + [1]])
      with torch.no_grad():
        out = hf(input_ids=torch.tensor([list(example.input_ids)]), labels=labels)
      log_probs = torch.log_softmax(out.logits[0], dim=-1)
      hf_scores.append(float(log_probs.gather(1, labels[0][:, None]).sum()))
    np.testing.assert_allclose(hf_scores, flanjax_scores, atol=1e-3)


@needs_files
def test_evaluate_every_benchmark_kind(model, spm_context):
  names = [
    "mmlu_anatomy_0shot",
    "bbh_navigate_direct",
    "bbh_navigate_cot",
    "mgsm_de_8shot",
  ]
  tasks = registry_eval_tasks(spm_context, names)
  cfg = EvalConfig(max_examples=2, batch_size=2, input_length=2048, target_length=8)
  report = evaluate.evaluate(model, tasks, cfg)
  assert report["errors"] == {}
  assert set(report["categories"]) == {"mmlu_0shot", "bbh_direct", "bbh_cot", "mgsm_8shot"}
  for name in names:
    entry = report["tasks"][name]
    assert entry["num_examples"] == {"test": {"0": 2}}
    method = "rank" if name.startswith("mmlu") else "decode"
    assert {s["method"] for s in entry["samples"]} == {method}
  assert report["tasks"]["bbh_navigate_cot"]["primary_metric"] == "exact_match"
  assert report["tasks"]["mgsm_de_8shot"]["primary_metric"] == "accuracy"
  summary = compare.benchmark_summary(report)
  assert set(summary) == {"mmlu_0shot", "bbh_direct", "bbh_cot", "mgsm_8shot"}
  assert summary["mmlu_0shot"]["groups"]["other"]["num_examples"] == 2
  assert summary["bbh_cot"]["missing"] == [
    t for t in benchmarks_tables.BBH_TASKS if t != "navigate"
  ]
  assert not summary["mgsm_8shot"]["complete"]
