"""Registering FLAN tasks and their held-out mixtures (the default context's seqio objects).

Tasks are data: a table of `TaskSpec` rows and one loop. Registration reads no file; templates
are checked against the data the first time a task's data is read in a context.

>>> register_flan_task(
...   "sst2_demo", source="sst2", category="sentiment", metrics=("accuracy",),
...   templates=[("{sentence}\\nWas that review positive or negative?", "{label_text}")],
...   preprocess=lambda ex: {**ex, "label_text": ["negative", "positive"][ex["label"]]},
...   options=["negative", "positive"])                                   # doctest: +SKIP
>>> ds = DEFAULT.get("sst2_demo").get_dataset(None, "validation")            # doctest: +SKIP
>>> next(ds.as_numpy_iterator())                                               # doctest: +SKIP
{'inputs_pretokenized': b"it 's a charming ... \\nWas that review positive or negative?\\n\\n
  OPTIONS:\\n- negative\\n- positive", 'targets_pretokenized': b'positive', 'template_id': 0,
  'options': b'negative|||positive', 'example_index': 0, 'inputs': [...], 'targets': [...]}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import seqio

from flanjax.data import tasks as tasks_lib
from flanjax.data.context import DEFAULT
from flanjax.data.tasks import CATEGORIES, TRAIN_SPLIT, TaskSpec

# FLAN 2021's extra exclusions when a category is held out.
EXTRA_EXCLUSIONS = {
  "natural_language_inference": ("paraphrase",),
  "paraphrase": ("natural_language_inference",),
  "reading_comprehension": ("read_comp_with_commonsense",),
  "commonsense": ("read_comp_with_commonsense",),
  "read_comp_with_commonsense": ("reading_comprehension", "commonsense"),
}
FLAN_2021_CAP = 3000


def register_flan_tasks(specs: Iterable[TaskSpec]) -> list[seqio.Task]:
  """Adds every spec to the task table and registers its seqio Task for the default context.

  >>> register_flan_tasks([TaskSpec("t", "sst2", [("{sentence}", "{label}")], "misc",
  ...                                ["exact_match"])])                          # doctest: +SKIP
  [<seqio.dataset_providers.Task object at ...>]
  """
  registered = []
  for spec in specs:
    if spec.name in seqio.TaskRegistry.names():
      raise ValueError(f"task {spec.name!r} is already registered (in seqio's registry)")
    tasks_lib.add_task(spec)
    try:
      registered.append(DEFAULT.get(spec.name))
    except Exception:
      tasks_lib.remove_task(spec.name)
      raise
  return registered


def register_flan_task(name: str, **fields: Any) -> seqio.Task:
  """Registers one task: `register_flan_task(name, *, source, templates, category, metrics,
  preprocess=None, options=None, num_shots=0, input_inversion=True, add_options=True,
  has_options=None, vocabulary=None, data_dir=None, family="flan", seed=0)`; the fields are
  `TaskSpec`'s (see there). Returns the default context's seqio Task.

  Raises:
    ValueError: duplicate name, unknown category, no templates, or no metrics. A template reading
      a field the preprocessed examples lack raises (naming task, template and field) when the
      task's data is first read.
  """
  return register_flan_tasks([TaskSpec(name, **fields)])[0]


def excluded_categories(category: str) -> set[str]:
  """Categories removed from training when `category` is held out (FLAN 2021).

  >>> sorted(excluded_categories("natural_language_inference"))
  ['natural_language_inference', 'paraphrase']
  """
  if category not in CATEGORIES:
    raise ValueError(f"unknown category {category!r}; known: {list(CATEGORIES)}")
  return {category, *EXTRA_EXCLUSIONS.get(category, ())}


def examples_proportional_rate(
  cap: int | None = FLAN_2021_CAP, temperature: float = 1.0, split: str = TRAIN_SPLIT
) -> Callable[[seqio.Task], float]:
  """Lazy rate `min(num_examples, cap) ** (1 / temperature)` (0 for a task without `split`).

  Evaluated on the task of the context in use, so it counts that context's data.
  >>> rate = examples_proportional_rate(cap=3000)  # sst2 with 20,000 train rows -> 3000.0
  """

  def rate(task: seqio.Task) -> float:
    if split not in task.splits:
      return 0.0
    count = task.source.num_input_examples(split)
    if cap is not None:
      count = min(count, cap)
    return float(count) ** (1.0 / temperature)

  return rate


def register_flan_mixtures(
  prefix: str,
  task_names: Sequence[str],
  *,
  cap: int | None = FLAN_2021_CAP,
  temperature: float = 1.0,
) -> list[str]:
  """Registers `<prefix>`, `<prefix>_holdout_<cat>` and `<prefix>_eval_<cat>` mixtures.

  Holdout/eval mixtures exist for every category that has a task in `task_names`.
  Returns the names registered (registering an existing name raises, as seqio does).
  >>> register_flan_mixtures("toy", ["toy_add", "toy_sentiment"])[:2]       # doctest: +SKIP
  ['toy', 'toy_holdout_closed_book_qa']
  """
  info = tasks_lib.get_task_info
  rate = examples_proportional_rate(cap, temperature)
  categories = sorted({info(n).category for n in task_names})
  names = [prefix]
  seqio.MixtureRegistry.add(prefix, [(n, rate) for n in task_names])
  for category in categories:
    dropped = excluded_categories(category)
    kept = [n for n in task_names if info(n).category not in dropped]
    if kept:
      seqio.MixtureRegistry.add(f"{prefix}_holdout_{category}", [(n, rate) for n in kept])
      names.append(f"{prefix}_holdout_{category}")
    in_category = [n for n in task_names if info(n).category == category]
    seqio.MixtureRegistry.add(f"{prefix}_eval_{category}", [(n, 1.0) for n in in_category])
    names.append(f"{prefix}_eval_{category}")
  return names


def holdout_mixture_name(prefix: str, category: str) -> str:
  """`holdout_mixture_name("flan_mini", "sentiment") == "flan_mini_holdout_sentiment"`."""
  excluded_categories(category)  # Validates the category.
  name = f"{prefix}_holdout_{category}"
  DEFAULT.get(name)
  return name
