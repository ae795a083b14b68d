"""Answer extraction for the held-out benchmarks, and their metrics (seqio's metric interface).

A generated output is reduced to its answer before it is compared with the target:

>>> bbh_cot_answer("Let's see. (A) is wrong, so the answer is (B).")
'(B)'
>>> mgsm_answer("She has 1,234.50 dollars. The answer is 1,234.50.")
1234.5

Metrics are `fn(targets, predictions) -> {name: value}` with values in 0-100, as
`flanjax.eval.metrics` expects; `METRICS` / `PRIMARY_KEY` here are the entries to merge into its
registry. No model, no TensorFlow: pure string work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# "So the answer is (A)." as every BBH chain-of-thought exemplar ends (matched case-insensitively).
_ANSWER_IS = re.compile(r"answer is\s*:?\s*(.*)", re.IGNORECASE | re.DOTALL)
_SENTENCE_END = re.compile(r"\.\s|\n")
# "(B)", "(B) option text" or a lone "B": not "B" starting a sentence ("A dog ...").
_CHOICE = re.compile(r"^\(([A-R])\)(?=$|[\s.,:;])|^([A-R])$")
_CHOICE_TARGET = re.compile(r"^\([A-R]\)$")
# A number: optional sign, digits with optional thousands commas, optional decimals.
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def bbh_cot_answer(output: str) -> str:
  """What follows the first "the answer is", up to the end of that sentence or line, without a
  trailing period; the whole output when the model never says it. The first match, as
  lm-evaluation-harness takes: a model that goes on to invent the next exemplar ("... So the
  answer is (A). Q: ...") is read at its own answer.

  >>> bbh_cot_answer("1+1=2. So the answer is 2. Q: 3+3? A: So the answer is 6.")
  '2'
  >>> bbh_cot_answer("valid")
  'valid'
  """
  output = _text(output)
  match = _ANSWER_IS.search(output)
  if match:
    output = _SENTENCE_END.split(match.group(1), maxsplit=1)[0]
  return output.strip().rstrip(".").strip()


def normalize_bbh(answer: str, target: str) -> str:
  """The BBH paper's light normalisation before exact match: surrounding space and a trailing
  period dropped, case ignored, and for a multiple-choice target `(X)` a prediction `X`, `X.`,
  `(X)` or `(X) option text` read as `(X)` (but not a sentence that starts with the letter).

  >>> normalize_bbh("B.", "(B)"), normalize_bbh("(C) the cat", "(C)"), normalize_bbh(" Yes. ", "No")
  ('(b)', '(c)', 'yes')
  >>> normalize_bbh("A dog", "(A)")
  'a dog'
  """
  answer = " ".join(_text(answer).split()).rstrip(".").strip()
  if _CHOICE_TARGET.match(target.strip()):
    match = _CHOICE.match(answer)
    if match:
      answer = f"({match.group(1) or match.group(2)})"
  return answer.lower()


def _bbh_exact_match(targets: Sequence, answers: Sequence[str]) -> dict[str, float]:
  if len(targets) != len(answers) or not len(targets):
    raise ValueError(f"bbh: got {len(targets)} targets and {len(answers)} predictions")
  hits = [
    normalize_bbh(a, _text(t)) == normalize_bbh(_text(t), _text(t))
    for t, a in zip(targets, answers, strict=True)
  ]
  return {"exact_match": 100.0 * sum(hits) / len(hits)}


def bbh_direct_em(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
  """Exact match of the whole (normalised) output: answer-only prompting.

  >>> bbh_direct_em(["(A)", "False", "valid"], ["A", "False.", "invalid"])["exact_match"]
  66.66666666666667
  """
  return _bbh_exact_match(targets, [_text(p) for p in predictions])


def bbh_cot_em(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
  """Exact match of the answer after "So the answer is" (chain-of-thought prompting).

  >>> bbh_cot_em(["(A)", "12"], ["... So the answer is (A).", "3 + 9 = 12. So the answer is 12."])
  {'exact_match': 100.0}
  """
  return _bbh_exact_match(targets, [bbh_cot_answer(p) for p in predictions])


def parse_number(text: str) -> float | None:
  """A number as written in an output: thousands commas removed.

  >>> parse_number("1,234.50"), parse_number("-7"), parse_number("x")
  (1234.5, -7.0, None)
  """
  text = _text(text).strip().replace(",", "")
  try:
    return float(text)
  except ValueError:
    return None


def mgsm_answer(output: str) -> float | None:
  """The last number of an output (MGSM's answer extraction), read up to its first blank line
  (where a model would start inventing the next exemplar); None when there is no number.

  >>> mgsm_answer("5 + 6 = 11. The answer is 11."), mgsm_answer("答えは11です。"), mgsm_answer("no")
  (11.0, 11.0, None)
  """
  own = _text(output).split("\n\n", 1)[0]
  for number in reversed(_NUMBER.findall(own)):
    value = parse_number(number)
    if value is not None:
      return value
  return None


def mgsm_accuracy(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
  """Percentage of outputs whose last number equals the integer answer (compared as numbers).

  >>> mgsm_accuracy(["1234", "18", "5"], ["It is 1,234.00 in all.", "18 dollars, then 19", "5"])
  {'accuracy': 66.66666666666667}
  """
  if len(targets) != len(predictions) or not len(targets):
    raise ValueError(
      f"mgsm_accuracy: got {len(targets)} targets and {len(predictions)} predictions"
    )
  hits = []
  for target, prediction in zip(targets, predictions, strict=True):
    gold, answer = parse_number(_text(target)), mgsm_answer(prediction)
    if gold is None:
      raise ValueError(f"mgsm_accuracy: target {target!r} is not a number")
    hits.append(answer is not None and abs(answer - gold) < 1e-6)
  return {"accuracy": 100.0 * sum(hits) / len(hits)}


# The entries for `flanjax.eval.metrics.METRICS` and `PRIMARY_KEY`.
METRICS = {
  "bbh_direct_em": bbh_direct_em,
  "bbh_cot_em": bbh_cot_em,
  "mgsm_accuracy": mgsm_accuracy,
}
PRIMARY_KEY = {
  "bbh_direct_em": "exact_match",
  "bbh_cot_em": "exact_match",
  "mgsm_accuracy": "accuracy",
}
