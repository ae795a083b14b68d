"""Generation and classification metrics in seqio's metric interface.

Every metric is `fn(targets, predictions) -> dict[str, float]` with values in 0-100 (as t5 reports
them). A target may be one reference string or a list of references (DialogSum's test split has
three summaries): the metric then takes the best reference per example (ROUGE, exact match, F1,
accuracy) or uses every reference stream (BLEU).

Tasks declare metrics by name at registration; `get_metric_fns(["rouge", "accuracy"])` maps the
names to functions.

Example:
  >>> fns = get_metric_fns(["exact_match", "f1"])
  >>> {k: round(v, 1) for fn in fns for k, v in fn(["The Cat"], ["cat"]).items()}
  {'exact_match': 100.0, 'f1': 100.0}
"""

from __future__ import annotations

import collections
import functools
import re
import string
from collections.abc import Callable, Sequence

import numpy as np

from flanjax.eval import answers

MetricFn = Callable[[Sequence, Sequence], dict[str, float]]
Target = str | Sequence[str]

ROUGE_KEYS = ("rouge1", "rouge2", "rougeLsum")


def _references(target: Target) -> list[str]:
  """One target as a non-empty list of reference strings."""
  if isinstance(target, bytes):
    return [target.decode("utf-8")]
  if not isinstance(target, (list, tuple, np.ndarray)):
    return [str(target)]  # a string, or a class label such as 0 / np.int64(1)
  refs = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in target]
  if not refs:
    raise ValueError("a target has an empty list of references")
  return refs


def _check_lengths(targets: Sequence, predictions: Sequence, metric: str) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{metric}: got {len(targets)} targets but {len(predictions)} predictions")
  if not len(targets):
    raise ValueError(f"{metric}: no examples to score (empty targets and predictions)")


# ----------------------------------------------------------------------------- ROUGE
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> str:
  """T5-style preparation for rougeLsum: one sentence per line.

  t5 replaces " . " by " .\\n"; we also split after "!" / "?" and untokenised full stops, since our
  targets are raw text.

  Example:
    >>> split_sentences("Tom is late. He missed the bus! Why?")
    'Tom is late.\\nHe missed the bus!\\nWhy?'
  """
  return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge(
  targets: Sequence[Target], predictions: Sequence[str], score_keys: Sequence[str] = ROUGE_KEYS
) -> dict[str, float]:
  """Mean ROUGE F-measure (x100), best reference per example.

  Example:
    >>> rouge(["the cat sat"], ["the cat sat"])["rouge1"]
    100.0
  """
  from rouge_score import rouge_scorer

  _check_lengths(targets, predictions, "rouge")
  scorer = rouge_scorer.RougeScorer(rouge_types=list(score_keys))
  totals = collections.defaultdict(float)
  for target, prediction in zip(targets, predictions, strict=True):
    prediction = split_sentences(prediction)
    best = {key: 0.0 for key in score_keys}
    for reference in _references(target):
      scores = scorer.score(target=split_sentences(reference), prediction=prediction)
      for key in score_keys:
        best[key] = max(best[key], scores[key].fmeasure)
    for key in score_keys:
      totals[key] += best[key]
  return {key: 100.0 * totals[key] / len(targets) for key in score_keys}


# ----------------------------------------------------------------------------- BLEU
def bleu(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
  """sacrebleu corpus BLEU with t5's settings (intl tokeniser, exp smoothing).

  Example:
    >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"], 1)
    100.0
  """
  import sacrebleu

  _check_lengths(targets, predictions, "bleu")
  references = [_references(t) for t in targets]
  num_streams = max(len(r) for r in references)
  # sacrebleu takes reference *streams*; None fills streams an example has no reference for.
  streams = [[r[i] if i < len(r) else None for r in references] for i in range(num_streams)]
  result = sacrebleu.corpus_bleu(
    list(predictions),
    streams,
    smooth_method="exp",
    tokenize="intl",
    lowercase=False,
    force=False,
    use_effective_order=False,
  )
  return {"bleu": float(result.score)}


# ----------------------------------------------------------------------------- SQuAD
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

  Example:
    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
  """
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


_TRIVIA_QA_PUNCTUATION = frozenset(string.punctuation + "‘’´`_")


def normalize_trivia_qa(text: str) -> str:
  """TriviaQA normalisation (FLAN's for Natural Questions): lower case, punctuation (and
  ‘’´`_) replaced by a space, no articles, single spaces.

  Example:
    >>> normalize_trivia_qa("The  Eiffel-Tower!"), normalize_answer("The  Eiffel-Tower!")
    ('eiffel tower', 'eiffeltower')
  """
  text = text.lower()
  text = "".join(" " if ch in _TRIVIA_QA_PUNCTUATION else ch for ch in text)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _token_f1(reference: str, prediction: str, normalize=normalize_answer) -> float:
  """SQuAD token F1 of one pair; 0 when nothing is shared (also when both sides normalise to
  nothing, as t5 scores it)."""
  ref_tokens = normalize(reference).split()
  pred_tokens = normalize(prediction).split()
  common = collections.Counter(ref_tokens) & collections.Counter(pred_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(pred_tokens)
  recall = num_same / len(ref_tokens)
  return 2 * precision * recall / (precision + recall)


def _best_over_references(targets, predictions, metric: str, score) -> float:
  """100 x the mean over examples of the best `score(reference, prediction)` over references."""
  _check_lengths(targets, predictions, metric)
  pairs = zip(targets, predictions, strict=True)
  return 100.0 * float(np.mean([max(score(r, p) for r in _references(t)) for t, p in pairs]))


def _exact(normalize):
  return lambda reference, prediction: float(normalize(reference) == normalize(prediction))


def exact_match(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
  """Percentage of predictions equal to some reference after SQuAD normalisation.

  Example:
    >>> exact_match([["Paris", "paris, France"], "a dog"], ["the paris", "cat"])
    {'exact_match': 50.0}
  """
  em = _best_over_references(targets, predictions, "exact_match", _exact(normalize_answer))
  return {"exact_match": em}


def token_f1(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD token F1 (x100), best reference per example.

  Example:
    >>> token_f1(["new york city"], ["new york"])
    {'f1': 80.0}
  """
  return {"f1": _best_over_references(targets, predictions, "f1", _token_f1)}


def squad(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
  """Exact match and token F1 together, as t5's `squad` metric."""
  return {**exact_match(targets, predictions), **token_f1(targets, predictions)}


def trivia_qa(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
  """Exact match and token F1 under TriviaQA normalisation, best over every reference: FLAN's
  metric for Natural Questions (t5's `trivia_qa`).

  Example:
    >>> trivia_qa([["Eiffel Tower", "la tour"]], ["eiffel-tower"])
    {'exact_match': 100.0, 'f1': 100.0}
  """
  f1 = functools.partial(_token_f1, normalize=normalize_trivia_qa)
  em = _best_over_references(targets, predictions, "trivia_qa", _exact(normalize_trivia_qa))
  return {"exact_match": em, "f1": _best_over_references(targets, predictions, "trivia_qa", f1)}


# ----------------------------------------------------------------------------- classification
def _label(value) -> str:
  if isinstance(value, bytes):
    value = value.decode("utf-8")
  return str(value).strip()


def accuracy(targets: Sequence[Target], predictions: Sequence) -> dict[str, float]:
  """Percentage of predictions equal to (one of) the target label(s), surrounding spaces ignored.

  Example:
    >>> accuracy(["yes", "no", "no"], ["yes", "no", "yes"])["accuracy"]  # doctest: +ELLIPSIS
    66.66...
  """
  _check_lengths(targets, predictions, "accuracy")
  hits = [
    float(_label(p) in {_label(r) for r in _references(t)})
    for t, p in zip(targets, predictions, strict=True)
  ]
  return {"accuracy": 100.0 * float(np.mean(hits))}


def macro_f1(
  targets: Sequence[Target], predictions: Sequence, options: Sequence[str] | None = None
) -> dict[str, float]:
  """F1 averaged over the classes (FLAN's second metric for CommitmentBank): the task's option
  set when given (so a sample that lacks a class still counts it, as FLAN's does), else the
  classes present in the targets.

  Example:
    >>> macro_f1(["a", "a", "b"], ["a", "b", "b"])
    {'macro_f1': 66.66666666666666}
    >>> macro_f1(["a", "a"], ["a", "b"], options=["a", "b"])  # class b: no hit, F1 0
    {'macro_f1': 33.33333333333333}
  """
  _check_lengths(targets, predictions, "macro_f1")
  gold = [_label(_references(t)[0]) for t in targets]
  pred = [_label(p) for p in predictions]
  f1s = []
  classes = sorted({_label(o) for o in options}) if options else sorted(set(gold))
  for label in classes:
    true_pos = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
    pred_pos = sum(p == label for p in pred)
    gold_pos = sum(g == label for g in gold)
    f1s.append(0.0 if true_pos == 0 else 2 * true_pos / (pred_pos + gold_pos))
  return {"macro_f1": 100.0 * float(np.mean(f1s))}


def glue_f1(
  targets: Sequence[Target], predictions: Sequence, options: Sequence[str] | None = None
) -> dict[str, float]:
  """GLUE's F1 of the positive class (MRPC, QQP), as FLAN computes it: the positive class is
  the task's last option (GLUE label 1, e.g. "yes"); a prediction that is not an option counts
  as wrong (t5's `f1_score_with_invalid`).

  Example:
    >>> glue_f1(["yes", "no", "yes"], ["yes", "yes", "maybe"], options=["no", "yes"])
    {'f1': 50.0}
  """
  _check_lengths(targets, predictions, "glue_f1")
  if not options:
    raise ValueError("glue_f1 needs the task's options (the positive class is the last one)")
  positive = _label(options[-1])
  valid = {_label(o) for o in options}
  gold = [_label(_references(t)[0]) == positive for t in targets]
  # An invalid prediction is the opposite of the gold label: never a hit.
  pred = [
    (_label(p) == positive) if _label(p) in valid else not g
    for p, g in zip(predictions, gold, strict=True)
  ]
  true_pos = sum(g and p for g, p in zip(gold, pred, strict=True))
  denominator = sum(pred) + sum(gold)
  return {"f1": 100.0 * (2 * true_pos / denominator if denominator else 0.0)}


# Differences from the reference implementations, named in the report's legend.
METRIC_NOTES = {
  "rouge": "rougeLsum splits sentences at . ! ? followed by a space (t5 splits only at ' . ', "
  "which our untokenised targets rarely contain: e.g. +2.4 on DialogSum)",
}
# Metrics that need the task's answer options (the set, in the task's order).
NEEDS_OPTIONS = frozenset({"macro_f1", "glue_f1"})


# ----------------------------------------------------------------------------- registry
METRICS: dict[str, MetricFn] = {
  "rouge": rouge,
  "bleu": bleu,
  "exact_match": exact_match,
  "f1": token_f1,
  "squad": squad,
  "accuracy": accuracy,
  "macro_f1": macro_f1,
  "trivia_qa": trivia_qa,
  "glue_f1": glue_f1,
  **answers.METRICS,  # the held-out benchmarks' answer extraction (BBH, MGSM)
}

# The number a metric name stands for in tables and in best-template selection.
PRIMARY_KEY = {
  "rouge": "rougeLsum",
  "bleu": "bleu",
  "exact_match": "exact_match",
  "f1": "f1",
  "squad": "f1",
  "accuracy": "accuracy",
  "macro_f1": "macro_f1",
  "trivia_qa": "exact_match",
  "glue_f1": "f1",
  **answers.PRIMARY_KEY,
}


def get_metric_fns(names: Sequence[str]) -> list[MetricFn]:
  """Metric functions for registered names; an unknown name or an empty list is an error.

  Example:
    >>> [fn.__name__ for fn in get_metric_fns(["rouge", "bleu"])]
    ['rouge', 'bleu']
  """
  if isinstance(names, str):
    names = [names]
  if not names:
    raise ValueError(
      f"a task declares no metrics; give it some of {sorted(METRICS)} at registration"
    )
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(f"unknown metric name(s) {unknown}; registered metrics: {sorted(METRICS)}")
  return [METRICS[n] for n in names]


def primary_key(metric_names: Sequence[str]) -> str:
  """The score a task is ranked by: the first declared metric's main number."""
  get_metric_fns(metric_names)
  return PRIMARY_KEY[metric_names[0]]


def compute_metrics(
  metric_names: Sequence[str],
  targets: Sequence[Target],
  predictions: Sequence,
  options: Sequence[str] | None = None,
) -> dict[str, float]:
  """Runs every named metric and merges their dicts; `options` (the task's answer options) go
  to the metrics that need them.

  Example:
    >>> compute_metrics(["accuracy"], ["yes"], ["yes"])
    {'accuracy': 100.0}
  """
  results: dict[str, float] = {}
  for name, fn in zip(metric_names, get_metric_fns(metric_names), strict=True):
    if name in NEEDS_OPTIONS:
      results.update(fn(targets, predictions, options=options))
    else:
      results.update(fn(targets, predictions))
  return results
