"""The held-out benchmarks' prompts, built from their own few-shot material (pure functions).

MMLU as lm-evaluation-harness writes it (the subject's 5 `dev` rows, then the question):

>>> row = {"question": "2+2?", "A": "3", "B": "4", "C": "5", "D": "6", "answer": "B"}
>>> print(mmlu_prompt("high_school_mathematics", [], row))
The following are multiple choice questions (with answers) about high school mathematics.
<BLANKLINE>
2+2?
A. 3
B. 4
C. 5
D. 6
Answer:

BBH from `cot-prompts/<task>.txt`: chain of thought (the file as is) or direct (the same three
exemplars with only their final answers); MGSM with the native chain-of-thought exemplars.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from flanjax.data.benchmarks_tables import MMLU_LETTERS

MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
BBH_COT_TRIGGER = "Let's think step by step."
_BBH_ANSWER = re.compile(r"So the answer is (.*?)\.?\s*$", re.DOTALL)
_COLONS = (":", "：")


# ----------------------------------------------------------------------------- MMLU
def mmlu_question(row: Mapping[str, Any], answer: str | None = None) -> str:
  """One MMLU question block, ending in `Answer:` (or `Answer: B` for an exemplar).

  >>> mmlu_question({"question": " 2+2? ", "A": "3", "B": "4", "C": "5", "D": "6"}, "B")
  '2+2?\\nA. 3\\nB. 4\\nC. 5\\nD. 6\\nAnswer: B'
  """
  choices = "".join(f"\n{letter}. {row[letter]}" for letter in MMLU_LETTERS)
  text = f"{str(row['question']).strip()}{choices}\nAnswer:"
  return text if answer is None else f"{text} {answer}"


def mmlu_prompt(subject: str, shots: Sequence[Mapping[str, Any]], row: Mapping[str, Any]) -> str:
  """Header naming the subject (underscores as spaces), each shot with its answer and a blank
  line, then the question (see the module docstring)."""
  header = MMLU_HEADER.format(subject=" ".join(subject.split("_")))
  exemplars = "".join(f"{mmlu_question(shot, shot['answer'])}\n\n" for shot in shots)
  return header + exemplars + mmlu_question(row)


# ----------------------------------------------------------------------------- BBH
@dataclasses.dataclass(frozen=True)
class BBHPrompt:
  """A parsed `cot-prompts/<task>.txt`: the task description and its (question, reasoning)
  exemplars; `answers` are the exemplars' final answers (`So the answer is (A).` -> `(A)`)."""

  description: str
  questions: tuple[str, ...]
  reasonings: tuple[str, ...]

  @property
  def answers(self) -> tuple[str, ...]:
    return tuple(_BBH_ANSWER.search(r).group(1).strip() for r in self.reasonings)


def parse_bbh_prompt(text: str, path: str = "<cot prompt>") -> BBHPrompt:
  """Drops the canary line and the `-----` separator; splits description and `Q:`/`A:` pairs.

  >>> text = "canary\\n-----\\nAdd.\\n\\nQ: 1+1\\nA: Let's think.\\n1+1=2. So the answer is 2."
  >>> p = parse_bbh_prompt(text)
  >>> p.description, p.questions, p.answers
  ('Add.', ('1+1',), ('2',))
  """
  lines = text.split("\n")
  if len(lines) < 3 or lines[1].strip() != "-----":
    raise ValueError(f"{path}: expected a canary line, then '-----', then the prompt")
  body = "\n".join(lines[2:]).strip()
  description, *blocks = body.split("\n\nQ: ")
  if not blocks:
    raise ValueError(f"{path}: no 'Q: ' exemplar after the task description")
  questions, reasonings = [], []
  for number, block in enumerate(blocks, start=1):
    question, found, reasoning = block.partition("\nA: ")
    if not found or not _BBH_ANSWER.search(reasoning):
      raise ValueError(
        f"{path}: exemplar {number} needs a '\\nA: ' line ending in 'So the answer is ...'"
      )
    questions.append(question)
    reasonings.append(reasoning)
  return BBHPrompt(description.strip(), tuple(questions), tuple(reasonings))


def bbh_prompt(prompt: BBHPrompt, task_input: str, cot: bool) -> str:
  """The 3-shot prompt of one BBH example.

  >>> p = BBHPrompt("Add.", ("1+1",), ("Let's think step by step.\\n1+1=2. So the answer is 2.",))
  >>> bbh_prompt(p, "2+2", cot=False)
  'Add.\\n\\nQ: 1+1\\nA: 2\\n\\nQ: 2+2\\nA:'
  >>> bbh_prompt(p, "2+2", cot=True)[-49:]
  "answer is 2.\\n\\nQ: 2+2\\nA: Let's think step by step."
  """
  answers = prompt.reasonings if cot else prompt.answers
  shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in zip(prompt.questions, answers, strict=True))
  ending = f" {BBH_COT_TRIGGER}" if cot else ""
  return f"{prompt.description}\n\n{shots}Q: {task_input}\nA:{ending}"


# ----------------------------------------------------------------------------- MGSM
def _prefix(texts: Sequence[str], what: str) -> str:
  """The shared `Label: ` prefix of every exemplar question (or answer), cut after its colon."""
  common = os.path.commonprefix(list(texts))
  cut = max(common.rfind(colon) for colon in _COLONS)
  if cut < 0:
    raise ValueError(f"MGSM exemplars: the {what}s share no 'Label:' prefix ({common!r})")
  end = cut + 1
  while end < len(common) and common[end] == " ":
    end += 1
  return common[:end]


def mgsm_prompt(exemplars: Sequence[Mapping[str, str]], question: str, shots: int) -> str:
  """Native chain-of-thought prompt: `shots` exemplars (`q` and `a` in the language, labels
  included), then the question with the language's own labels.

  >>> ex = [{"q": "Question: 1+1?", "a": "Step-by-Step Answer: 1+1=2. The answer is 2."},
  ...       {"q": "Question: 2+1?", "a": "Step-by-Step Answer: 2+1=3. The answer is 3."}]
  >>> print(mgsm_prompt(ex, "3+3?", shots=1))
  Question: 1+1?
  Step-by-Step Answer: 1+1=2. The answer is 2.
  <BLANKLINE>
  Question: 3+3?
  Step-by-Step Answer:
  """
  if shots > len(exemplars):
    raise ValueError(f"MGSM: {shots}-shot needs {shots} exemplars, found {len(exemplars)}")
  question_label = _prefix([e["q"] for e in exemplars], "question")
  answer_label = _prefix([e["a"] for e in exemplars], "answer").rstrip()
  blocks = [f"{e['q']}\n{e['a']}" for e in exemplars[:shots]]
  blocks.append(f"{question_label}{question}\n{answer_label}")
  return "\n\n".join(blocks)
