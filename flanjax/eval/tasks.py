"""What evaluation runs on: `EvalTask`s of rendered, tokenised `EvalExample`s.

An `EvalTask` is built by hand (no TensorFlow, no seqio: any object with the seqio Vocabulary's
`encode` / `decode` / `eos_id` serves as its vocabulary), or from registered FLAN tasks through
`registry_eval_tasks(ctx, names)`, whose examples come from the data side's one source of eval
rows (`flanjax.data.eval_data.eval_rows`) in the given data context.

Example:
  >>> from flanjax.data import DataContext                                 # doctest: +SKIP
  >>> tasks = registry_eval_tasks(DataContext(), ["toy_eval_sentiment"])   # doctest: +SKIP
  >>> tasks[0].name, tasks[0].category, tasks[0].load("test", 2)[0].options  # doctest: +SKIP
  ('toy_sentiment_words', 'sentiment', ('negative', 'positive'))
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any


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

  `load(split, max_examples)` returns the split's examples (at most `max_examples` per template
  when given); `splits` lists the splits the task has; `vocabulary` encodes the answer options
  and decodes generated ids (seqio Vocabulary interface: encode, decode, eos_id, vocab_size).
  """

  name: str
  category: str
  metric_names: tuple[str, ...]
  splits: tuple[str, ...]
  load: Callable[[str, int | None], Sequence[EvalExample]]
  vocabulary: Any


def limit_per_template(examples: Iterable[EvalExample], max_examples: int | None):
  """The first `max_examples` examples of each template, in order (all when None)."""
  if max_examples is None:
    return list(examples)
  counts: dict[str, int] = {}
  kept = []
  for example in examples:
    if counts.get(example.template_id, 0) < max_examples:
      counts[example.template_id] = counts.get(example.template_id, 0) + 1
      kept.append(example)
  return kept


def registry_eval_tasks(ctx: Any, names: Sequence[str]) -> list[EvalTask]:
  """EvalTasks of the registered FLAN tasks/mixtures `names` in data context `ctx`.

  A task named by several mixtures is kept once. An unknown name raises the data side's
  ValueError (listing what is registered) here, before any model work.
  """
  from flanjax.data import eval_data
  from flanjax.data import tasks as data_tasks

  eval_tasks: list[EvalTask] = []
  seen: set[str] = set()
  for mixture in names:
    for name in ctx.task_names(mixture):
      if name in seen:
        continue
      seen.add(name)
      info = data_tasks.get_task_info(name)
      provider = ctx.get(name)

      @functools.cache
      def load(split, max_examples, name=name):
        rows = eval_data.eval_rows(ctx, name, split, max_per_template=max_examples)
        return tuple(
          EvalExample(
            input_ids=tuple(row.input_ids),
            target=tuple(row.references) if row.references else row.target,
            template_id=str(row.template_id),
            options=tuple(row.options),
            input_text=row.input_text,
          )
          for row in rows
        )

      eval_tasks.append(
        EvalTask(
          name=name,
          category=info.category,
          metric_names=tuple(info.metrics),
          splits=tuple(provider.splits),
          load=load,
          vocabulary=ctx.vocabulary_of(name),
        )
      )
  return eval_tasks


def categories_of(ctx: Any, mixture: str) -> list[str]:
  """Categories that a training mixture actually trains on: those of its tasks with a train
  split and a positive mixing rate, i.e. the tasks its stream draws rows from (a task without
  train rows, such as nq_open, leaves its category held out).

  Example:
    >>> categories_of(DataContext(), "toy_holdout_sentiment")              # doctest: +SKIP
    ['closed_book_qa', 'misc', 'natural_language_inference', 'paraphrase']
  """
  from flanjax.data import pipeline
  from flanjax.data import tasks as data_tasks

  try:
    names, _ = pipeline.mixture_tasks_and_rates(ctx, mixture, "train")
  except ValueError:  # nothing in it trains at all
    return []
  return sorted({data_tasks.get_task_info(n).category for n in names})
