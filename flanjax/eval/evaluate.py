"""Runs a model over eval mixtures: rank classification or decoding per task, metrics, report.

Example:
  >>> import mixtures  # registers the shipped tasks and mixtures          # doctest: +SKIP
  >>> report = evaluate(hf.load_pretrained("flan-t5-small"), "flan_mini_eval_sentiment",
  ...                   split="test", out_dir="workdir/eval/step_1000",
  ...                   heldout_categories=["sentiment"])                  # doctest: +SKIP
  >>> report["categories"]["sentiment"]  # heldout, tasks, metric, score...  # doctest: +SKIP

For every task and template: examples with OPTIONS are scored by rank classification (the option
with the highest log-likelihood is the prediction), the others are decoded greedily (or by beam
search); the task's declared metrics score the predictions per template; `scoring` then picks the
best template on the validation split and reports it on `split`, takes the mean over templates and
the mean per category. A task that raises is recorded in the report with its error message and the
other tasks still run.

Shapes are fixed per task (inputs and options padded to one power-of-two bucket each, every batch
padded to `batch_size` rows), so a task compiles its programs once and later tasks with the same
buckets compile nothing.

Tasks come from seqio (names of FLAN tasks or mixtures registered by `flanjax.data`) or as
`EvalTask`s built by hand, which needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flanjax.eval import metrics as metrics_lib
from flanjax.eval import rank as rank_lib
from flanjax.eval import report as report_lib
from flanjax.eval import scoring

log = logging.getLogger(__name__)

NUM_SAMPLES = 3  # predictions kept in report.json per task, to read what the model says


@dataclasses.dataclass(frozen=True)
class EvalExample:
  """One rendered example: token ids (EOS included) and the strings metrics compare."""

  input_ids: tuple[int, ...]
  target: str | tuple[str, ...]
  template_id: str
  options: tuple[str, ...] = ()
  input_text: str = ""


@dataclasses.dataclass(frozen=True)
class EvalTask:
  """What evaluation needs from a task.

  `load(split, max_examples)` returns the split's rendered examples (at most `max_examples` per
  template when given); `splits` lists the splits the task has.
  """

  name: str
  category: str
  metric_names: tuple[str, ...]
  splits: tuple[str, ...]
  load: Callable[[str, int | None], Sequence[EvalExample]]


@dataclasses.dataclass(frozen=True)
class EvalLengths:
  inputs: int = 512
  targets: int = 128


class NoExamplesError(ValueError):
  """An eval mixture (or task) has no examples in the requested split."""


# ----------------------------------------------------------------------------- tasks
def _limit_per_template(examples: Iterable[EvalExample], max_examples: int | None):
  if max_examples is None:
    return list(examples)
  counts: dict[str, int] = {}
  kept = []
  for example in examples:
    if counts.get(example.template_id, 0) < max_examples:
      counts[example.template_id] = counts.get(example.template_id, 0) + 1
      kept.append(example)
  return kept


def _as_text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def seqio_eval_tasks(mixture_or_task: str, vocabulary=None) -> list[EvalTask]:
  """EvalTasks for a registered FLAN task or mixture (`import mixtures` registers the shipped ones).

  Category and metric names come from `flanjax.data.get_task_info`; examples from the seqio
  task's dataset (`inputs` token ids with EOS, `targets_pretokenized`, `template_id`, `options`).
  With `vocabulary` (e.g. a pretrained model's own), inputs are encoded with it instead of the
  task's vocabulary.
  """
  from flanjax.data import tasks as data_tasks
  from flanjax.data import templates as templates_lib

  eval_tasks = []
  for name in data_tasks.task_names_of(mixture_or_task):
    info = data_tasks.get_task_info(name)
    task = data_tasks.get_mixture_or_task(name)

    @functools.cache
    def load(split, max_examples, task=task, info=info):
      dataset = task.get_dataset(
        sequence_length=None, split=split, shuffle=False, num_epochs=1, use_cached=False
      )
      if max_examples is not None:  # records are rendered with every eval template in turn
        dataset = dataset.take(max_examples * max(1, len(info.eval_template_ids)))
      examples = (
        EvalExample(
          input_ids=(
            tuple(int(t) for t in ex["inputs"])
            if vocabulary is None
            else tuple(vocabulary.encode(_as_text(ex["inputs_pretokenized"])))
            + (int(vocabulary.eos_id),)
          ),
          target=_as_text(ex["targets_pretokenized"]),
          template_id=str(int(ex["template_id"])),
          options=tuple(templates_lib.split_options(ex["options"])),
          input_text=_as_text(ex["inputs_pretokenized"]),
        )
        for ex in dataset.as_numpy_iterator()
      )
      return tuple(_limit_per_template(examples, max_examples))

    eval_tasks.append(
      EvalTask(
        name=name,
        category=info.category,
        metric_names=tuple(info.metrics),
        splits=tuple(task.splits),
        load=load,
      )
    )
  return eval_tasks


def seqio_vocabulary(mixture_or_task: str):
  """The targets vocabulary of a registered task or mixture (to encode options, decode outputs)."""
  from flanjax.data import tasks as data_tasks

  provider = data_tasks.get_mixture_or_task(mixture_or_task)
  return provider.output_features["targets"].vocabulary


def heldout_categories_of(train_mixture: str, eval_tasks: Sequence[EvalTask]) -> list[str]:
  """Categories of `eval_tasks` that no task of the training mixture belongs to."""
  from flanjax.data import tasks as data_tasks

  train_categories = [
    data_tasks.get_task_info(n).category for n in data_tasks.task_names_of(train_mixture)
  ]
  return scoring.heldout_categories(train_categories, [t.category for t in eval_tasks])


def _resolve_tasks(mixture_or_tasks, vocabulary=None) -> tuple[list[EvalTask], str]:
  """EvalTasks and a label for the report; a task in several named mixtures is kept once."""
  items = [mixture_or_tasks] if isinstance(mixture_or_tasks, str) else list(mixture_or_tasks)
  tasks: list[EvalTask] = []
  seen_from_seqio: set[str] = set()
  for item in items:
    if not isinstance(item, str):
      tasks.append(item)
      continue
    for task in seqio_eval_tasks(item, vocabulary):
      if task.name not in seen_from_seqio:
        seen_from_seqio.add(task.name)
        tasks.append(task)
  label = ",".join(i if isinstance(i, str) else i.name for i in items)
  return tasks, label


def _check_tasks(tasks: Sequence[EvalTask], label: str) -> None:
  if not tasks:
    raise ValueError(f"eval mixture {label!r} has no tasks")
  for task in tasks:
    try:
      metrics_lib.get_metric_fns(list(task.metric_names))
    except ValueError as error:
      raise ValueError(f"task {task.name!r}: {error}") from None
  duplicates = {t.name for t in tasks if [u.name for u in tasks].count(t.name) > 1}
  if duplicates:
    raise ValueError(f"eval mixture {label!r} lists task(s) {sorted(duplicates)} twice")


# ----------------------------------------------------------------------------- model calls
def _generate(model, input_tokens: np.ndarray, max_new_tokens: int, num_beams: int) -> np.ndarray:
  """[b, l] → [b, <=max_new_tokens] generated ids, through `model.generate` (T5Model)."""
  mask = (input_tokens != 0).astype(np.int32)
  if hasattr(model, "generate"):
    return np.asarray(
      model.generate(
        input_tokens, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams
      )
    )
  from flanjax.model import decode

  return decode.generate(
    model.config,
    model.params,
    input_tokens,
    mask,
    max_new_tokens=max_new_tokens,
    num_beams=num_beams,
  )


def _strip(ids: Sequence[int], eos_id: int) -> list[int]:
  """Generated ids up to (not including) the first EOS, without padding."""
  out = []
  for token in ids:
    token = int(token)
    if token == eos_id:
      break
    if token != 0:
      out.append(token)
  return out


def _decode_predictions(
  model,
  vocabulary,
  examples: Sequence[EvalExample],
  *,
  batch_size: int,
  input_length: int,
  max_new_tokens: int,
  num_beams: int,
  eos_id: int,
) -> list[str]:
  predictions = []
  for start in range(0, len(examples), batch_size):
    batch = examples[start : start + batch_size]
    # Padding rows hold a lone EOS so every row attends to something; their outputs are dropped.
    rows = [e.input_ids for e in batch] + [(eos_id,)] * (batch_size - len(batch))
    tokens = rank_lib.pad_rows(rows, input_length)  # [batch_size, input_length]
    generated = _generate(model, tokens, max_new_tokens, num_beams)  # [batch_size, <=new]
    predictions += [vocabulary.decode(_strip(g, eos_id)) for g in generated[: len(batch)]]
  return predictions


# ----------------------------------------------------------------------------- one task
@dataclasses.dataclass
class _TaskShapes:
  input_length: int
  target_length: int
  num_options: int


def _task_shapes(
  examples: Sequence[EvalExample], option_ids: Mapping[str, Sequence[int]], lengths: EvalLengths
) -> _TaskShapes:
  longest_input = max(len(e.input_ids) for e in examples)
  longest_option = max((len(v) for v in option_ids.values()), default=1)
  return _TaskShapes(
    input_length=rank_lib.bucket_length(longest_input, lengths.inputs),
    target_length=rank_lib.bucket_length(longest_option, lengths.targets),
    num_options=max((len(e.options) for e in examples), default=0),
  )


def _evaluate_task(
  model,
  vocabulary,
  task: EvalTask,
  splits: Sequence[str],
  *,
  max_examples: int | None,
  batch_size: int,
  lengths: EvalLengths,
  length_normalize: bool,
  num_beams: int,
  eos_id: int,
) -> tuple[dict, dict, dict]:
  """Returns per_template {tid: {split: metrics}}, samples {tid: [...]} (of the last split) and
  example counts {split: {tid: n}}."""
  by_split = {split: list(task.load(split, max_examples)) for split in splits}
  if not by_split[splits[-1]]:
    raise NoExamplesError(f"task {task.name!r} has no examples in split {splits[-1]!r}")
  every = [e for examples in by_split.values() for e in examples]
  option_ids = {
    o: tuple(vocabulary.encode(o)) + (eos_id,)
    for o in sorted({o for e in every for o in e.options})
  }
  shapes = _task_shapes(every, option_ids, lengths)
  per_template: dict[str, dict[str, dict[str, float]]] = {}
  samples: dict[str, list[dict[str, Any]]] = {}
  counts: dict[str, dict[str, int]] = {}
  for split, examples in by_split.items():
    predictions: list[Any] = [None] * len(examples)
    ranked = [i for i, e in enumerate(examples) if e.options]
    if ranked:
      result = rank_lib.rank_classify(
        model,
        [examples[i].input_ids for i in ranked],
        [[option_ids[o] for o in examples[i].options] for i in ranked],
        batch_size=batch_size,
        length_normalize=length_normalize,
        num_options=shapes.num_options,
        input_length=shapes.input_length,
        target_length=shapes.target_length,
      )
      for i, choice in zip(ranked, result.choices, strict=True):
        predictions[i] = examples[i].options[int(choice)]
    decoded = [i for i, e in enumerate(examples) if not e.options]
    if decoded:
      texts = _decode_predictions(
        model,
        vocabulary,
        [examples[i] for i in decoded],
        batch_size=batch_size,
        input_length=shapes.input_length,
        max_new_tokens=lengths.targets,
        num_beams=num_beams,
        eos_id=eos_id,
      )
      for i, text in zip(decoded, texts, strict=True):
        predictions[i] = text
    template_ids = sorted({e.template_id for e in examples})
    for template_id in template_ids:
      rows = [i for i, e in enumerate(examples) if e.template_id == template_id]
      targets = [examples[i].target for i in rows]
      scores = metrics_lib.compute_metrics(
        list(task.metric_names), targets, [predictions[i] for i in rows]
      )
      per_template.setdefault(template_id, {})[split] = scores
      samples[template_id] = [
        {
          "input": examples[i].input_text[-500:],
          "target": examples[i].target,
          "prediction": predictions[i],
          "method": "rank" if examples[i].options else "decode",
        }
        for i in rows[:NUM_SAMPLES]
      ]
    counts[split] = {t: sum(e.template_id == t for e in examples) for t in template_ids}
  return per_template, samples, counts


def _splits_for(
  task: EvalTask, split: str, selection_split: str, test_fallback_split: str | None
) -> list[str] | None:
  """[selection split (if the task has it and it differs), report split], or None.

  A task without a "test" split (GLUE-style sets have no labelled test) is reported on
  `test_fallback_split`, as FLAN reports them on their dev sets.
  """
  if split not in task.splits:
    if split != "test" or not test_fallback_split or test_fallback_split not in task.splits:
      return None
    split = test_fallback_split
  if selection_split in task.splits and selection_split != split:
    return [selection_split, split]
  return [split]


# ----------------------------------------------------------------------------- entry
def evaluate(
  model,
  mixture_or_tasks: str | Sequence[str | EvalTask],
  *,
  split: str = "test",
  out_dir: str | os.PathLike | None = None,
  heldout_categories: Iterable[str] = (),
  step: int | None = None,
  max_examples: int | None = None,
  batch_size: int = 16,
  lengths: EvalLengths | Mapping[str, int] | tuple[int, int] = EvalLengths(),
  vocabulary=None,
  selection_split: str = "validation",
  length_normalize: bool = False,
  num_beams: int = 1,
  test_fallback_split: str | None = "validation",
  train_mixture: str | None = None,
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Evaluates `model` on every task of an eval mixture; writes report.{json,md,png} to out_dir.

  Args:
    model: a `flanjax.model.hf.T5Model` (anything with `.config`, `.params` and `.generate`).
    mixture_or_tasks: a seqio mixture or task name (e.g. "flan_mini_eval_sentiment"), or a list
      of names and/or `EvalTask`s.
    split: the split reported. With split="test", a task without a test split (GLUE-style sets
      have no labelled test) is reported on `test_fallback_split`; its entry's "split" says so.
    out_dir: where the report goes (e.g. `workdir/eval/step_<N>`); None: no files.
    heldout_categories: categories the training mixture did not contain (marked in the report).
    train_mixture: the training mixture's name: its missing categories are marked held out too.
    max_examples: at most this many examples per template and split.
    batch_size: rows per forward pass (fixed: the last batch is padded).
    lengths: maximum input / target lengths (truncation, bucket caps, max new tokens).
    vocabulary: encodes options and decodes outputs (seqio Vocabulary interface: encode, decode,
      eos_id); default: the seqio tasks' targets vocabulary. Given with mixture names, inputs
      are re-encoded with it (evaluate an HF model with its own vocabulary).
    selection_split: where the best template is chosen.
    length_normalize: rank options by mean rather than total token log-likelihood.
    num_beams: beam size for decoded tasks (1: greedy).
    test_fallback_split: see `split`; None: a task without a test split is an error.
    extra: more fields for report.json (e.g. the checkpoint or HF dir evaluated).

  Returns:
    The report dict (also written as report.json).

  Raises:
    ValueError: no tasks, a task without (known) metrics, or no example in `split` in any task.
  """
  if not isinstance(lengths, EvalLengths):
    lengths = EvalLengths(**lengths) if isinstance(lengths, Mapping) else EvalLengths(*lengths)
  names = (
    [mixture_or_tasks]
    if isinstance(mixture_or_tasks, str)
    else [m for m in mixture_or_tasks if isinstance(m, str)]
  )
  tasks, label = _resolve_tasks(mixture_or_tasks, vocabulary)
  _check_tasks(tasks, label)
  heldout = set(heldout_categories)
  if train_mixture:
    heldout |= set(heldout_categories_of(train_mixture, tasks))
  plans = {t.name: _splits_for(t, split, selection_split, test_fallback_split) for t in tasks}
  if not any(plans.values()):
    available = {t.name: list(t.splits) for t in tasks}
    raise NoExamplesError(
      f"eval mixture {label!r} has no examples in split {split!r}; splits per task: {available}"
    )
  if vocabulary is None:
    if not names:
      raise ValueError("evaluate: pass `vocabulary=` when giving EvalTasks instead of a mixture")
    vocabulary = seqio_vocabulary(names[0])
  eos_id = int(getattr(vocabulary, "eos_id", None) or model.config.eos_token_id)
  vocab_size = getattr(vocabulary, "vocab_size", None)
  if vocab_size is not None and int(vocab_size) > model.config.vocab_size:
    raise ValueError(
      f"the vocabulary has {vocab_size} ids but the model's vocab_size is "
      f"{model.config.vocab_size}: evaluate with the model's own vocabulary (`vocabulary=`, or "
      "FLANJAX_VOCAB=<model dir or .model file> when registering the tasks)"
    )

  summaries = []
  start_time = time.time()
  for task in tasks:
    task_start = time.time()
    splits = plans[task.name]
    try:
      if splits is None:
        raise NoExamplesError(
          f"task {task.name!r} has no split {split!r}; it has {list(task.splits)}"
        )
      per_template, samples, counts = _evaluate_task(
        model,
        vocabulary,
        task,
        splits,
        max_examples=max_examples,
        batch_size=batch_size,
        lengths=lengths,
        length_normalize=length_normalize,
        num_beams=num_beams,
        eos_id=eos_id,
      )
      summary = scoring.summarize_task(
        task.name,
        category=task.category,
        metric_names=task.metric_names,
        per_template=per_template,
        report_split=splits[-1],
        selection_split=selection_split,
      )
      summary["num_examples"] = counts
      summary["samples"] = samples[summary["best_template"]["template_id"]]
    except Exception as error:  # one task's failure must not lose the others' results
      log.error("evaluation of task %s failed:\n%s", task.name, traceback.format_exc())
      summary = scoring.failed_task(
        task.name,
        category=task.category,
        metric_names=task.metric_names,
        error=f"{type(error).__name__}: {error}",
        report_split=split,
      )
    summary["seconds"] = round(time.time() - task_start, 3)
    summaries.append(summary)
    log.info(
      "eval %s: %s (%.1fs)",
      task.name,
      summary["score"] if summary["error"] is None else summary["error"],
      summary["seconds"],
    )

  if all(
    isinstance(s["error"], str) and s["error"].startswith("NoExamplesError") for s in summaries
  ):
    raise NoExamplesError(
      f"eval mixture {label!r} has no examples in split {split!r}: "
      + "; ".join(s["error"] for s in summaries)
    )
  report = report_lib.build_report(
    summaries,
    split=split,
    heldout_categories=sorted(heldout),
    step=step,
    selection_split=selection_split,
    extra={
      "mixture": label,
      "max_examples": max_examples,
      "seconds": round(time.time() - start_time, 3),
      **dict(extra or {}),
    },
  )
  if out_dir is not None and jax.process_index() == 0:  # every process computed the same report
    report_lib.write_report(report, out_dir)
  return report


def make_eval_fn(
  model_config, mixture_or_tasks, workdir: str | os.PathLike, **evaluate_kwargs
) -> Callable[[int, Any], dict[str, float]]:
  """The training loop's `eval_fn(step, params) -> {name: value}`, writing
  `workdir/eval/step_<N>/report.{json,md,png}`.

  `evaluate_kwargs` go to `evaluate` (e.g. train_mixture=config.mixture, lengths, batch_size,
  max_examples). Tasks (and their examples, cached by the loader) are resolved on the first call.
  Returned values: `eval/<category>` per category, `eval/heldout_mean` and `eval/seen_mean`.

  Example:
    >>> eval_fn = make_eval_fn(model_config, config.eval_mixtures, workdir,
    ...                        train_mixture=config.mixture)                # doctest: +SKIP
    >>> eval_fn(1000, state.params)["eval/heldout_mean"]                    # doctest: +SKIP
  """
  from flanjax.model import hf

  resolved: dict[str, Any] = {}

  def eval_fn(step: int, params) -> dict[str, float]:
    if "tasks" not in resolved:
      vocabulary = evaluate_kwargs.get("vocabulary")
      resolved["tasks"], _ = _resolve_tasks(mixture_or_tasks, vocabulary)
      if vocabulary is None:
        names = (
          [mixture_or_tasks]
          if isinstance(mixture_or_tasks, str)
          else [m for m in mixture_or_tasks if isinstance(m, str)]
        )
        if names:
          evaluate_kwargs["vocabulary"] = seqio_vocabulary(names[0])
    out_dir = pathlib.Path(workdir) / "eval" / f"step_{int(step)}"
    report = evaluate(
      hf.T5Model(model_config, params),
      resolved["tasks"],
      out_dir=out_dir,
      step=int(step),
      **evaluate_kwargs,
    )
    return summary_scalars(report)

  return eval_fn


def summary_scalars(report: Mapping[str, Any]) -> dict[str, float]:
  """Flat numbers for logs: per category, mean over held-out and over seen categories.

  Example:
    >>> summary_scalars({"categories": {"nli": {"score": 60.0, "heldout": True},
    ...                                 "sentiment": {"score": 80.0, "heldout": False}}})
    {'eval/nli': 60.0, 'eval/sentiment': 80.0, 'eval/heldout_mean': 60.0, 'eval/seen_mean': 80.0}
  """
  out = {
    f"eval/{name}": float(c["score"])
    for name, c in report["categories"].items()
    if c["score"] is not None
  }
  for flag, key in ((True, "eval/heldout_mean"), (False, "eval/seen_mean")):
    scores = [
      c["score"]
      for c in report["categories"].values()
      if c["heldout"] is flag and c["score"] is not None
    ]
    if scores:
      out[key] = float(np.mean(scores))
  return out
