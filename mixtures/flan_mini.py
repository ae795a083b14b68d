"""flan_mini: one FLAN task per real dataset in the data dir, and its held-out mixtures.

Tasks are data: `TASKS` is a table of `TaskSpec` rows (name, templates, category, metrics,
preprocess, options) and one loop registers them. Datasets come from `<data_dir>/<name>/` (the
context's data dir: config.data_dir, else env `FLANJAX_DATA_DIR`), or from the hub when the data
dir is `hf:`. Registration reads no file: when the data dir is missing, using a task raises an
error naming the expected path and `FLANJAX_DATA_DIR`.

Command: `FLANJAX_DATA_DIR=../shared/data python tools/launch.py show --task sst2 -n 3`.
"""

from __future__ import annotations

import re
from typing import Any

from flanjax.data import registry, sources
from flanjax.data.tasks import TaskSpec
from flanjax.data.templates import inverted

YES_NO = ["yes", "no"]


def _sst2(ex: dict[str, Any]) -> dict[str, Any]:
  """{"sentence": "fun . ", "label": 1} -> adds sentence "fun ." and label_text "positive"."""
  return {
    **ex,
    "sentence": ex["sentence"].strip(),
    "label_text": ["negative", "positive"][ex["label"]],
  }


def _nli_label(names: list[str], answers: dict[str, str]):
  """Maps a string label ("entailment") or the hub's int label (0) to an answer ("yes")."""

  def preprocess(ex: dict[str, Any]) -> dict[str, Any]:
    label = ex["label"]
    label = names[label] if isinstance(label, int) else label
    return {**ex, "answer": answers[label]}

  return preprocess


def _mrpc(ex: dict[str, Any]) -> dict[str, Any]:
  """{"Quality": 1, "#1 String": a, "#2 String": b} -> sentence1 a, sentence2 b, answer "yes"."""
  return {
    **ex,
    "sentence1": ex["#1 String"],
    "sentence2": ex["#2 String"],
    "answer": "yes" if int(ex["Quality"]) == 1 else "no",
  }


def _copa(ex: dict[str, Any]) -> dict[str, Any]:
  """{"p", "a1", "a2", "asks-for": "cause", "most-plausible-alternative": 2} -> options, answer."""
  choice = ex["most-plausible-alternative"] if "label" not in ex else int(ex["label"]) + 1
  alternatives = [ex["a1"], ex["a2"]]
  asks_for = ex["asks-for"]
  return {
    **ex,
    "premise": ex["p"].rstrip("."),
    "asks_for": asks_for,
    "connector": "because" if asks_for == "cause" else "so",
    "options": alternatives,
    "answer": alternatives[int(choice) - 1],
  }


_CHOICE = re.compile(r"\(([A-D])\)\s*")


def _openbookqa(ex: dict[str, Any]) -> dict[str, Any]:
  """ "(A) x (B) y (C) z (D) w" + "Answer Key": "B" -> options [x, y, z, w], answer y."""
  if "question_stem" in ex:  # Hub layout (allenai/openbookqa).
    ex = {**ex, "Question Stem": ex["question_stem"], "Answer Key": ex["answerKey"]}
    letters, texts = ex["choices"]["label"], ex["choices"]["text"]
  else:
    parts = _CHOICE.split(ex["Choices"])[1:]  # [letter, text, letter, text, ...]
    letters, texts = parts[0::2], [t.strip() for t in parts[1::2]]
  options = list(texts)
  return {
    **ex,
    "question": ex["Question Stem"],
    "options": options,
    "answer": options[letters.index(ex["Answer Key"])],
  }


def _commongen(ex: dict[str, Any]) -> dict[str, Any]:
  """ "field_N#look_V#stand_V" -> concepts "field, look, stand"; target the first scene."""
  if "concepts" in ex:  # Hub layout (allenai/common_gen): concepts list, one target per row.
    return {
      **ex,
      "concept_list": ", ".join(ex["concepts"]),
      "scene_text": ex["target"],
      "scenes": [ex["target"]],
    }
  concepts = [c.rsplit("_", 1)[0] for c in ex["concept_set"].split("#")]
  return {
    **ex,
    "concept_list": ", ".join(concepts),
    "scene_text": ex["scene"][0],
    "scenes": list(ex["scene"]),  # every reference scene: FLAN scores against all of them
  }


def _webnlg(ex: dict[str, Any]) -> dict[str, Any]:
  """["A | p | B", ...] -> triples "A : p : B; ..." (underscores as spaces); the first text."""
  triples = [
    " : ".join(part.strip().replace("_", " ") for part in t.split("|"))
    for t in ex["modifiedtripleset"]
  ]
  texts = [lex["text"] for lex in ex["lex"] if lex.get("text")]
  return {**ex, "triples": "; ".join(triples), "text": texts[0] if texts else "", "texts": texts}


def _dialogsum(ex: dict[str, Any]) -> dict[str, Any]:
  """The test split has summary1..3 / topic1..3: the first becomes `summary` / `topic`."""
  summaries = [ex[k] for k in ("summary", "summary1", "summary2", "summary3") if ex.get(k)]
  return {
    **ex,
    "summary": ex.get("summary", ex.get("summary1")),
    "topic": ex.get("topic", ex.get("topic1")),
    "summaries": summaries,  # the test split's three references
  }


def _nq_open(ex: dict[str, Any]) -> dict[str, Any]:
  """{"question": q, "answer": ["a", "b"]} -> answer_text "a" (first acceptable answer)."""
  return {**ex, "answer_text": ex["answer"][0]}


SAMSUM_STYLE = [  # The seed's SAMSum templates, used for dialogue summarisation.
  ("{dialogue}\n\nBriefly summarize that dialogue.", "{summary}"),
  ("Here is a dialogue:\n{dialogue}\n\nWrite a short summary!", "{summary}"),
  ("Dialogue:\n{dialogue}\n\nWhat is a summary of this dialogue?", "{summary}"),
  ("{dialogue}\n\nWhat was that dialogue about, in two sentences or less?", "{summary}"),
  ("Here is a dialogue:\n{dialogue}\n\nWhat were they talking about?", "{summary}"),
  ("Dialogue:\n{dialogue}\nWhat were the main points in that conversation?", "{summary}"),
  ("Dialogue:\n{dialogue}\nWhat was going on in that conversation?", "{summary}"),
  inverted("Write a dialogue that matches this summary: {summary}", "{dialogue}"),
]

NLI_TEMPLATES = [
  ('{premise}\n\nDoes it follow that "{hypothesis}"?', "{answer}"),
  ("Read this:\n{premise}\n\nIs this statement true given the text? {hypothesis}", "{answer}"),
  (
    "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis?",
    "{answer}",
  ),
  '{{ premise }}\n\nBased on that passage, can we say that "{{ hypothesis }}"? ||| {{ answer }}',
  ("Suppose that {premise} Can we infer that {hypothesis}?", "{answer}"),
  ("Text: {premise}\n\nClaim: {hypothesis}\n\nIs the claim supported by the text?", "{answer}"),
]


def _task(name: str, hub: sources.HFSource | None, **fields: Any) -> TaskSpec:
  """A flan_mini row: `<data_dir>/<name>`, or `hub` when the data dir is `hf:`."""
  return TaskSpec(name, sources.LocalOrHubSource(name, hub), **fields)


# One row per dataset (TaskSpec fields; the source is `<data_dir>/<name>` or its hub twin).
TASKS: tuple[TaskSpec, ...] = (
  _task(
    "dialogsum",
    hub=sources.HFSource("knkarthick/dialogsum"),
    templates=SAMSUM_STYLE,
    category="summarization",
    metrics=("rouge",),
    references="summaries",
    preprocess=_dialogsum,
  ),
  _task(
    "sst2",
    hub=sources.HFSource(
      "nyu-mll/glue", "sst2", split_map={"train": "train", "validation": "validation"}
    ),
    templates=[
      ("Review:\n{sentence}\nIs this movie review sentence negative or positive?", "{label_text}"),
      ("{sentence}\n\nHow would the sentiment of this sentence be described?", "{label_text}"),
      (
        "Short movie review: {sentence}\n"
        "Did the critic think positively or negatively of the movie?",
        "{label_text}",
      ),
      "Sentence from a movie review: {{ sentence }}\nWas the movie seen positively or negatively "
      "based on the preceding review? ||| {{ label_text }}",
      ('"{sentence}"\nHow would you describe the sentiment of this review?', "{label_text}"),
      inverted("Write a {label_text} movie review sentence.", "{sentence}"),
    ],
    category="sentiment",
    metrics=("accuracy",),
    preprocess=_sst2,
    options=["negative", "positive"],
  ),
  _task(
    "rte",
    hub=sources.HFSource(
      "aps/super_glue", "rte", split_map={"train": "train", "validation": "validation"}
    ),
    templates=NLI_TEMPLATES,
    category="natural_language_inference",
    metrics=("accuracy",),
    preprocess=_nli_label(
      ["entailment", "not_entailment"], {"entailment": "yes", "not_entailment": "no"}
    ),
    options=YES_NO,
  ),
  _task(
    "cb",
    hub=sources.HFSource(
      "aps/super_glue", "cb", split_map={"train": "train", "validation": "validation"}
    ),
    templates=NLI_TEMPLATES,
    category="natural_language_inference",
    metrics=("accuracy", "macro_f1"),
    preprocess=_nli_label(
      ["entailment", "contradiction", "neutral"],
      {"entailment": "yes", "contradiction": "no", "neutral": "it's impossible to say"},
    ),
    options=["yes", "it's impossible to say", "no"],
  ),
  _task(
    "mrpc",
    hub=sources.HFSource(
      "nyu-mll/glue",
      "mrpc",
      split_map={"train": "train", "test": "test"},
      rename={"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
    ),
    templates=[
      (
        "Here are two sentences:\n{sentence1}\n{sentence2}\nDo they have the same meaning?",
        "{answer}",
      ),
      (
        "Sentence 1: {sentence1}\nSentence 2: {sentence2}\n\n"
        "Are these two sentences paraphrases of "
        "each other?",
        "{answer}",
      ),
      'Do "{{ sentence1 }}" and "{{ sentence2 }}" say the same thing? ||| {{ answer }}',
      ("{sentence1}\n\nDoes that mean the same as the following?\n{sentence2}", "{answer}"),
      (
        "First: {sentence1}\nSecond: {sentence2}\nIs the second a rewording of the first?",
        "{answer}",
      ),
    ],
    category="paraphrase",
    metrics=("accuracy", "glue_f1"),  # FLAN: GLUE's F1 of "yes", invalid predictions wrong
    preprocess=_mrpc,
    options=["no", "yes"],
  ),
  _task(
    "copa",
    hub=sources.HFSource(
      "aps/super_glue",
      "copa",
      split_map={"train": "train", "validation": "validation"},
      rename={"premise": "p", "choice1": "a1", "choice2": "a2", "question": "asks-for"},
    ),
    templates=[
      ("{p} What was the {asks_for} of this?", "{answer}"),
      ("Premise: {p}\n\nWhat is the more plausible {asks_for}?", "{answer}"),
      ("Complete the sentence: {premise} {connector}", "{answer}"),
      "{{ p }}\nWhich alternative is the likelier {{ asks_for }}? ||| {{ answer }}",
      ('Here is a premise: "{p}"\nWhich of the options is its {asks_for}?', "{answer}"),
      inverted("Write a sentence whose {asks_for} could be: {answer}", "{p}"),
    ],
    category="commonsense",
    metrics=("accuracy",),
    preprocess=_copa,
    has_options=True,  # preprocess builds per-example options
  ),
  _task(
    "openbookqa",
    hub=sources.HFSource("allenai/openbookqa", "main"),
    templates=[
      ("{question}", "{answer}"),
      ("Complete the fact: {question}", "{answer}"),
      ("Science question: {question}\nWhat is the right answer?", "{answer}"),
      "{{ question }}...\nWhich of the choices completes this best? ||| {{ answer }}",
      ("Choose your answer. {question}", "{answer}"),
    ],
    category="reading_comprehension",
    metrics=("accuracy",),
    preprocess=_openbookqa,
    has_options=True,  # preprocess builds per-example options
  ),
  _task(
    "commongen",
    hub=sources.HFSource(
      "allenai/common_gen", split_map={"train": "train", "validation": "validation"}
    ),
    templates=[
      (
        "Concepts: {concept_list}\n\nWrite a sentence that includes all these words.",
        "{scene_text}",
      ),
      (
        "Keywords: {concept_list}\n\nWhat is a sentence that includes all these keywords?",
        "{scene_text}",
      ),
      ("Produce a sentence which mentions all of these concepts: {concept_list}", "{scene_text}"),
      "Write a short everyday sentence using the words {{ concept_list }}. ||| {{ scene_text }}",
      ("Generate a sentence about a scene with: {concept_list}", "{scene_text}"),
      inverted("What are the key concepts of this sentence?\n{scene_text}", "{concept_list}"),
    ],
    category="struct_to_text",
    metrics=("rouge", "bleu"),
    references="scenes",
    preprocess=_commongen,
  ),
  _task(
    "webnlg",
    hub=None,
    templates=[
      ("Facts: {triples}\n\nWrite a sentence that states these facts.", "{text}"),
      ("Turn this data into text: {triples}", "{text}"),
      ("Here are some triples: {triples}\nDescribe them in plain English.", "{text}"),
      "Data: {{ triples }}\nWhat sentence describes this data? ||| {{ text }}",
      ("{triples}\n\nGenerate a sentence about this data.", "{text}"),
    ],
    category="struct_to_text",
    metrics=("rouge", "bleu"),
    references="texts",
    preprocess=_webnlg,
  ),
  _task(
    "multi30k",
    hub=sources.HFSource("bentrevett/multi30k"),
    templates=[
      ("Translate to German:\n\n{en}", "{de}"),
      ('How is "{en}" said in German?', "{de}"),
      ("{en}\n\nTranslate this caption into German.", "{de}"),
      "English: {{ en }}\nGerman: ||| {{ de }}",
      ("Translate the following sentence from English to German: {en}", "{de}"),
      inverted("Translate to English:\n\n{de}", "{en}"),
    ],
    category="translation",
    metrics=("bleu",),
  ),
  _task(
    "nq_open",
    hub=sources.HFSource(
      "google-research-datasets/nq_open", split_map={"validation": "validation"}
    ),
    templates=[
      ("{question}?", "{answer_text}"),
      ("Answer this question: {question}?", "{answer_text}"),
      ("Q: {question}?\nA:", "{answer_text}"),
      "Please answer this question: {{ question }} ||| {{ answer_text }}",
      ("What is the answer to this question? {question}", "{answer_text}"),
    ],
    category="closed_book_qa",
    metrics=("trivia_qa",),  # FLAN: TriviaQA-normalised EM / F1 over every answer
    references="answer",
    preprocess=_nq_open,
  ),
)


registry.register_flan_tasks(TASKS)
MIXTURES = registry.register_flan_mixtures("flan_mini", [spec.name for spec in TASKS])
