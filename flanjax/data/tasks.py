"""FLAN tasks as real `seqio.Task`s, with category tags and held-out mixtures.

A task is data (source + templates + category + metrics); `register_flan_task` turns it into a
seqio Task whose examples are rendered prompts:

>>> register_flan_task(
...   "sst2_demo", source="sst2", category="sentiment", metrics=("accuracy",),
...   templates=[("{sentence}\\nWas that review positive or negative?", "{label_text}")],
...   preprocess=lambda ex: {**ex, "label_text": ["negative", "positive"][ex["label"]]},
...   options=["negative", "positive"])                                   # doctest: +SKIP
>>> ds = seqio.get_mixture_or_task("sst2_demo").get_dataset(None, "validation")  # doctest: +SKIP
>>> next(ds.as_numpy_iterator())                                               # doctest: +SKIP
{'inputs_pretokenized': b"it 's a charming ... \\nWas that review positive or negative?\\n\\n
  OPTIONS:\\n- negative\\n- positive", 'targets_pretokenized': b'positive', 'template_id': 0,
  'options': b'negative|||positive', 'example_index': 0, 'inputs': [...], 'targets': [...]}

Every example carries `template_id` (int32) and `options` (answer options joined by "|||", "" for
generation tasks; `templates.split_options` decodes it). Splits: "train" renders each example with
one template drawn deterministically (inverted templates included when `input_inversion`); every
other split renders each example with every non-inverted template, so evaluation scores per
template. Metric NAMES live in `get_task_info(name).metrics`; the evaluator maps them to functions.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from flanjax.data import sources as sources_lib
from flanjax.data import templates as templates_lib
from flanjax.data import vocab as vocab_lib

CATEGORIES = (
  "natural_language_inference",
  "reading_comprehension",
  "closed_book_qa",
  "commonsense",
  "coreference",
  "paraphrase",
  "sentiment",
  "struct_to_text",
  "summarization",
  "translation",
  "read_comp_with_commonsense",
  "misc",
)
# FLAN 2021's extra exclusions when a category is held out.
EXTRA_EXCLUSIONS = {
  "natural_language_inference": ("paraphrase",),
  "paraphrase": ("natural_language_inference",),
  "reading_comprehension": ("read_comp_with_commonsense",),
  "commonsense": ("read_comp_with_commonsense",),
  "read_comp_with_commonsense": ("reading_comprehension", "commonsense"),
}
FLAN_2021_CAP = 3000
TRAIN_SPLIT = "train"


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What evaluation needs to know about a task, without parsing anything."""

  name: str
  category: str
  metrics: tuple[str, ...]
  has_options: bool
  template_ids: tuple[int, ...]
  eval_template_ids: tuple[int, ...]  # Non-inverted: the ones rendered for eval splits.
  num_shots: int
  family: str
  source: str


@dataclasses.dataclass
class _TaskSpec:
  name: str
  source: Any
  templates: tuple[templates_lib.Template, ...]
  preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None
  options: tuple[str, ...] | None
  num_shots: int
  input_inversion: bool
  add_options: bool
  seed: int
  _rendered: dict = dataclasses.field(default_factory=dict)
  _lock: Any = dataclasses.field(default_factory=threading.Lock)

  def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
    example = dict(record)
    if self.preprocess is not None:
      example = self.preprocess(example)
    if self.options is not None:
      example[templates_lib.OPTIONS_FIELD] = list(self.options)
    return example

  @property
  def train_templates(self):
    return [t for t in self.templates if self.input_inversion or not t.inverted]

  @property
  def eval_templates(self):
    return [t for t in self.templates if not t.inverted]

  def render_split(self, split: str) -> dict[str, list]:
    """Renders a split once (cached): lists of inputs, targets, template_id, options, index."""
    with self._lock:
      if split not in self._rendered:
        self._rendered[split] = self._render(split)
      return self._rendered[split]

  def _render(self, split: str) -> dict[str, list]:
    records = self.source.load(split)
    exemplar_pool = None
    if self.num_shots:
      if TRAIN_SPLIT not in self.source.splits:
        raise ValueError(f"task {self.name!r}: {self.num_shots}-shot needs a train split")
      exemplar_pool = [self.prepare(r) for r in self.source.load(TRAIN_SPLIT)]
    if split == TRAIN_SPLIT:
      candidates = self.train_templates
      choice = np.random.default_rng([self.seed, zlib.crc32(self.name.encode())]).integers(
        len(candidates), size=len(records)
      )
      per_example = [[candidates[c]] for c in choice]
    else:
      per_example = [self.eval_templates] * len(records)
    split_key = zlib.crc32(split.encode())
    out = {"inputs": [], "targets": [], "template_id": [], "options": [], "example_index": []}
    for index, (record, chosen) in enumerate(zip(records, per_example, strict=True)):
      try:
        example = self.prepare(record)
        shots = []
        if exemplar_pool is not None:
          exclude = index if split == TRAIN_SPLIT else None
          picks = templates_lib.choose_exemplars(
            len(exemplar_pool), self.num_shots, index + split_key, self.seed, exclude
          )
          shots = [exemplar_pool[i] for i in picks]
        for template in chosen:
          prompt, target, options = templates_lib.render_few_shot(
            template, example, shots, add_options=self.add_options, task_name=self.name
          )
          out["inputs"].append(prompt)
          out["targets"].append(target)
          out["template_id"].append(template.template_id)
          out["options"].append(templates_lib.join_options(options))
          out["example_index"].append(index)
      except (KeyError, ValueError, IndexError, TypeError) as error:
        raise ValueError(
          f"task {self.name!r}, split {split!r}, example {index}: {error}"
        ) from error
    return out


class FlanDataSource(seqio.DataSource):
  """seqio DataSource yielding rendered examples (rendering runs once per split, in Python)."""

  def __init__(self, spec: _TaskSpec):
    self._spec = spec
    super().__init__(splits=spec.source.splits, caching_permitted=False)

  @property
  def splits(self):
    return self._spec.source.splits

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def num_input_examples(self, split: str) -> int:
    return self._spec.source.count(split)

  def get_dataset(self, split=TRAIN_SPLIT, shuffle=True, seed=None, shard_info=None, **unused):
    del unused
    rendered = self._spec.render_split(split)
    dataset = tf.data.Dataset.from_tensor_slices(
      {
        "inputs": tf.constant(rendered["inputs"], tf.string),
        "targets": tf.constant(rendered["targets"], tf.string),
        "template_id": tf.constant(rendered["template_id"], tf.int32),
        "options": tf.constant(rendered["options"], tf.string),
        "example_index": tf.constant(rendered["example_index"], tf.int32),
      }
    )
    if shard_info:
      dataset = dataset.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      dataset = dataset.shuffle(len(rendered["inputs"]), seed=seed)
    return dataset


_TASK_INFOS: dict[str, TaskInfo] = {}
_TASK_SPECS: dict[str, _TaskSpec] = {}


def register_flan_task(
  name: str,
  *,
  source: Any,
  templates: Sequence[Any],
  category: str,
  metrics: Sequence[str],
  preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
  options: Sequence[str] | None = None,
  num_shots: int = 0,
  input_inversion: bool = True,
  add_options: bool = True,
  has_options: bool | None = None,
  vocabulary: seqio.Vocabulary | None = None,
  data_dir: str | None = None,
  family: str = "flan",
  seed: int = 0,
) -> seqio.Task:
  """Registers a seqio Task rendering `source` records through `templates`.

  Args:
    source: a folder name under the data dir, an absolute folder, `"hf:name[:config]"`, or a
      `sources.LocalSource`/`sources.HFSource` (or any object with splits/load/peek/count).
    templates: `(prompt, target)` format pairs, `"prompt ||| target"` Jinja strings or Templates.
    category: one of CATEGORIES.
    metrics: metric names for the evaluator ("accuracy", "exact_match", "f1", "rouge", "bleu").
    preprocess: example -> example (e.g. label id -> label text, list fields -> strings).
    options: fixed answer options for a classification task (or let `preprocess` put a per-example
      `options` list in the example).
    num_shots: k FLAN few-shot exemplars drawn deterministically from the train split.
    input_inversion: train on the templates marked inverted (never used for eval splits).
    add_options: append the OPTIONS block to classification prompts.
    has_options: whether examples carry answer options (classification, scored by rank
      classification); default: inferred from `options` or from the data when it is reachable.
    vocabulary: defaults to `vocab.get_vocabulary()`.
    data_dir: overrides the data dir for a folder-name source.
  Raises:
    ValueError: duplicate name, unknown category, no templates, or (when the data is reachable)
      a template reading a field the preprocessed examples lack.
  """
  if name in _TASK_INFOS or name in seqio.TaskRegistry.names():
    raise ValueError(f"task {name!r} is already registered")
  if category not in CATEGORIES:
    raise ValueError(f"task {name!r}: unknown category {category!r}; known: {list(CATEGORIES)}")
  if not templates:
    raise ValueError(f"task {name!r}: needs at least one template")
  if not metrics or not all(isinstance(m, str) and m for m in metrics):
    raise ValueError(f"task {name!r}: metrics must be a non-empty list of metric names")
  if data_dir is not None and isinstance(source, str) and not source.startswith("hf:"):
    source = sources_lib.LocalSource(f"{data_dir}/{source}")
  spec = _TaskSpec(
    name=name,
    source=sources_lib.make_source(source) if isinstance(source, str) else source,
    templates=tuple(templates_lib.parse_template(t, i) for i, t in enumerate(templates)),
    preprocess=preprocess,
    options=tuple(options) if options is not None else None,
    num_shots=num_shots,
    input_inversion=input_inversion,
    add_options=add_options,
    seed=seed,
  )
  if not spec.eval_templates:
    raise ValueError(f"task {name!r}: every template is inverted; eval splits need one that isn't")
  found_options = _check_against_data(spec) if spec.source.is_available() else None
  if has_options is None:
    has_options = options is not None or bool(found_options)
  elif found_options is not None and found_options != has_options and options is None:
    raise ValueError(f"task {name!r}: has_options={has_options} but the data says {found_options}")
  vocabulary = vocabulary or vocab_lib.get_vocabulary()
  features = {
    "inputs": seqio.Feature(vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary, add_eos=True),
  }
  task = seqio.TaskRegistry.add(
    name,
    source=FlanDataSource(spec),
    output_features=features,
    preprocessors=[
      functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=True),
      seqio.preprocessors.append_eos_after_trim,
    ],
    metric_fns=[],
  )
  _TASK_SPECS[name] = spec
  _TASK_INFOS[name] = TaskInfo(
    name=name,
    category=category,
    metrics=tuple(metrics),
    has_options=has_options,
    template_ids=tuple(t.template_id for t in spec.train_templates),
    eval_template_ids=tuple(t.template_id for t in spec.eval_templates),
    num_shots=num_shots,
    family=family,
    source=repr(spec.source),
  )
  return task


def _check_against_data(spec: _TaskSpec) -> bool:
  """Checks templates against the first record of every split; returns whether it has options."""
  has_options = False
  for split in spec.source.splits:
    record = spec.source.peek(split)
    if record is None:
      continue
    example = spec.prepare(record)
    where = f"split {split!r} of {spec.source!r} (after preprocess)"
    templates_lib.check_template_fields(spec.name, spec.templates, set(example), where)
    has_options = has_options or bool(example.get(templates_lib.OPTIONS_FIELD))
    for template in spec.templates:
      templates_lib.render_example(template, example, task_name=spec.name)
  return has_options


def get_task_info(name: str) -> TaskInfo:
  """Category, metric names, options flag and template ids of a registered FLAN task."""
  if name not in _TASK_INFOS:
    raise KeyError(f"unknown FLAN task {name!r}; known: {sorted(_TASK_INFOS)}")
  return _TASK_INFOS[name]


def get_task_spec(name: str) -> _TaskSpec:
  get_task_info(name)
  return _TASK_SPECS[name]


def list_flan_tasks(family: str | None = None) -> list[str]:
  return sorted(n for n, info in _TASK_INFOS.items() if family in (None, info.family))


# ---------------------------------------------------------------------------------------------
# Mixtures.


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
  """
  rate = examples_proportional_rate(cap, temperature)
  categories = sorted({get_task_info(n).category for n in task_names})
  names = [prefix]
  seqio.MixtureRegistry.add(prefix, [(n, rate) for n in task_names])
  for category in categories:
    dropped = excluded_categories(category)
    kept = [n for n in task_names if get_task_info(n).category not in dropped]
    if kept:
      seqio.MixtureRegistry.add(f"{prefix}_holdout_{category}", [(n, rate) for n in kept])
      names.append(f"{prefix}_holdout_{category}")
    in_category = [n for n in task_names if get_task_info(n).category == category]
    seqio.MixtureRegistry.add(f"{prefix}_eval_{category}", [(n, 1.0) for n in in_category])
    names.append(f"{prefix}_eval_{category}")
  return names


def get_mixture_or_task(name: str) -> seqio.Task | seqio.Mixture:
  """seqio lookup with an error that lists what is registered."""
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  known = sorted(n for n in seqio.MixtureRegistry.names() if not n.startswith("_"))
  raise ValueError(
    f"unknown mixture or task {name!r} (did you `import mixtures`?); known mixtures: {known}; "
    f"known FLAN tasks: {list_flan_tasks()}"
  )


def task_names_of(name: str) -> list[str]:
  """Leaf task names of a mixture (or `[name]` for a task)."""
  provider = get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    return [t.name for t in provider.tasks]
  return [provider.name]


def holdout_mixture_name(prefix: str, category: str) -> str:
  """`holdout_mixture_name("flan_mini", "sentiment") == "flan_mini_holdout_sentiment"`."""
  excluded_categories(category)  # Validates the category.
  name = f"{prefix}_holdout_{category}"
  get_mixture_or_task(name)
  return name
