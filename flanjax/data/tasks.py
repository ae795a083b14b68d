"""FLAN tasks as data: `TaskSpec` rows, the table of registered tasks, and rendering.

A task is data (source + templates + category + metrics); rendering a split turns its records
into prompts. Nothing here reads a file until a split is rendered, and nothing here knows seqio
or a vocabulary: `context.DataContext` binds a task to a data dir and a vocabulary.

>>> spec = TaskSpec(
...   "sst2_demo", source="sst2", category="sentiment", metrics=("accuracy",),
...   templates=[("{sentence}\\nWas that review positive or negative?", "{label_text}")],
...   preprocess=lambda ex: {**ex, "label_text": ["negative", "positive"][ex["label"]]},
...   options=["negative", "positive"])
>>> add_task(spec).render_split("validation", "../shared/data")["inputs"][0]  # doctest: +SKIP
"it 's a charming ... \\nWas that review positive or negative?\\n\\nOPTIONS:\\n- negative\\n- ..."

Every rendered row carries `template_id` and `options` (answer options joined by "|||", "" for
generation tasks; `templates.split_options` decodes it). Splits: "train" renders each example with
one template drawn deterministically (inverted templates included when `input_inversion`); every
other split renders each example with every non-inverted template, so evaluation scores per
template. Metric NAMES live in `get_task_info(name).metrics`; the evaluator maps them to functions.
"""

from __future__ import annotations

import dataclasses
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from flanjax.data import sources as sources_lib
from flanjax.data import templates as templates_lib
from flanjax.data.benchmarks_tables import BENCHMARK_CATEGORIES

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
TRAIN_SPLIT = "train"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One row of a task table: everything `register_flan_task` needs, as plain data.

  source: a folder name under the data dir, an absolute folder, `"hf:name[:config]"`, or a
    source object (`sources.LocalSource`/`HFSource`/`LocalOrHubSource`, `toy.ToySource`, or any
    object with `splits`, `load`, `peek`, `count`, `is_available` and optionally `bind`).
  templates: `(prompt, target)` format pairs, `"prompt ||| target"` Jinja strings or Templates.
  category: one of CATEGORIES. metrics: metric names for the evaluator ("accuracy",
    "exact_match", "f1", "rouge", "bleu", "macro_f1").
  preprocess: example -> example (e.g. label id -> label text, list fields -> strings).
  options: fixed answer options of a classification task (or let `preprocess` put a per-example
    `options` list in the example and declare `has_options=True`).
  num_shots: k FLAN few-shot exemplars drawn deterministically from the train split.
  input_inversion: train on the templates marked inverted (never used for eval splits).
  add_options: append the OPTIONS block to classification prompts.
  has_options: whether examples carry answer options (rank classification); default:
    `options is not None`. Checked against the data when it is first read.
  vocabulary: None (the context's vocabulary), a fixed `seqio.Vocabulary` (kept in every
    context), or a function `DataContext -> seqio.Vocabulary` (the toy tasks' toy vocabulary).
  data_dir: a fixed data dir for a folder-name source (overrides the context's).
  family: "flan" (real datasets) or "toy"; seed: template and exemplar choice.
  references: the field of the prepared example holding EVERY acceptable target (a list, or
    one string), e.g. all of Natural Questions' answers or all CommonGen scenes; evaluation
    scores against all of them (the templates' target should be one of them). None: the
    rendered target is the only reference.
  selection_rows: a dataset without a validation or a test split gets FLAN's selection split
    (`"selection"`: the last `selection_rows` train rows, at most a quarter of train, removed
    from training) on which evaluation picks the best template; 0 turns it off.
  >>> TaskSpec("t", "sst2", [("{sentence}", "{label}")], "sentiment", ["accuracy"]).family
  'flan'
  """

  name: str
  source: Any
  templates: Sequence[Any]
  category: str
  metrics: Sequence[str]
  preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None
  options: Sequence[str] | None = None
  num_shots: int = 0
  input_inversion: bool = True
  add_options: bool = True
  has_options: bool | None = None
  vocabulary: Any = None
  data_dir: str | None = None
  family: str = "flan"
  seed: int = 0
  references: str | None = None
  selection_rows: int = 200

  def __post_init__(self):
    for name in ("templates", "metrics", "options"):
      value = getattr(self, name)
      if value is not None and not isinstance(value, str):
        object.__setattr__(self, name, tuple(value))


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What evaluation needs to know about a task, without reading any data."""

  name: str
  category: str
  metrics: tuple[str, ...]
  has_options: bool
  template_ids: tuple[int, ...]
  eval_template_ids: tuple[int, ...]  # Non-inverted: the ones rendered for eval splits.
  num_shots: int
  family: str
  source: str


class FlanTask:
  """A registered task: its spec, parsed templates, source, and rendered splits per data dir."""

  def __init__(self, spec: TaskSpec):
    self.spec = spec
    self.name = spec.name
    self.templates = tuple(templates_lib.parse_template(t, i) for i, t in enumerate(spec.templates))
    source = spec.source
    if spec.data_dir is not None and isinstance(source, str) and not source.startswith("hf:"):
      source = f"{spec.data_dir}/{source}"
    source = sources_lib.make_source(source) if isinstance(source, str) else source
    if spec.selection_rows:
      source = sources_lib.SelectionSplitSource(source, spec.selection_rows)
    self.source = source
    self.has_options = spec.options is not None if spec.has_options is None else spec.has_options
    self._rendered: dict[tuple[str | None, str], dict[str, list]] = {}
    self._checked: set[str | None] = set()
    self._lock = threading.Lock()

  @property
  def train_templates(self) -> list[templates_lib.Template]:
    return [t for t in self.templates if self.spec.input_inversion or not t.inverted]

  @property
  def eval_templates(self) -> list[templates_lib.Template]:
    return [t for t in self.templates if not t.inverted]

  def bound_source(self, data_dir: str | None) -> Any:
    """The task's source reading under `data_dir` (see `sources.bind`)."""
    return sources_lib.bind(self.source, data_dir)

  def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
    example = dict(record)
    if self.spec.preprocess is not None:
      example = self.spec.preprocess(example)
    if self.spec.options is not None:
      example[templates_lib.OPTIONS_FIELD] = list(self.spec.options)
    return example

  def render_split(self, split: str, data_dir: str | None) -> dict[str, list]:
    """Renders a split once per data dir (cached): lists of inputs, targets, template_id,
    options, example_index. The first read under a data dir checks every template against the
    first record of every split (an error names task, template and missing field)."""
    with self._lock:
      key = (data_dir, split)
      if key not in self._rendered:
        source = self.bound_source(data_dir)
        if data_dir not in self._checked:
          self._check_against_data(source)
          self._checked.add(data_dir)
        self._rendered[key] = self._render(source, split)
      return self._rendered[key]

  def _check_against_data(self, source: Any) -> None:
    found_options = False
    for split in source.splits:
      record = source.peek(split)
      if record is None:
        continue
      example = self.prepare(record)
      where = f"split {split!r} of {source!r} (after preprocess)"
      templates_lib.check_template_fields(self.name, self.templates, set(example), where)
      found_options = found_options or bool(example.get(templates_lib.OPTIONS_FIELD))
      for template in self.templates:
        templates_lib.render_example(template, example, task_name=self.name)
    if found_options != self.has_options and self.spec.options is None:
      declared = "declares" if self.spec.has_options is not None else "defaults to"
      raise ValueError(
        f"task {self.name!r} {declared} has_options={self.has_options} but the data says "
        f"{found_options}: pass has_options={found_options} to register_flan_task"
      )

  def _references(self, example: Mapping[str, Any]) -> list[str]:
    """Every acceptable target of an example (`spec.references`), [] when not declared."""
    field = self.spec.references
    if field is None:
      return []
    if field not in example:
      raise KeyError(f"references field {field!r} is not in the example (after preprocess)")
    value = example[field]
    values = [value] if isinstance(value, str) else list(value)
    return [str(v) for v in values if str(v).strip()]

  def _render(self, source: Any, split: str) -> dict[str, list]:
    records = source.load(split)
    exemplar_pool = None
    num_shots, seed = self.spec.num_shots, self.spec.seed
    if num_shots:
      if TRAIN_SPLIT not in source.splits:
        raise ValueError(f"task {self.name!r}: {num_shots}-shot needs a train split")
      exemplar_pool = [self.prepare(r) for r in source.load(TRAIN_SPLIT)]
    if split == TRAIN_SPLIT:
      candidates = self.train_templates
      choice = np.random.default_rng([seed, zlib.crc32(self.name.encode())]).integers(
        len(candidates), size=len(records)
      )
      per_example = [[candidates[c]] for c in choice]
    else:
      per_example = [self.eval_templates] * len(records)
    split_key = zlib.crc32(split.encode())
    out = {
      "inputs": [],
      "targets": [],
      "template_id": [],
      "options": [],
      "example_index": [],
      "references": [],
    }
    for index, (record, chosen) in enumerate(zip(records, per_example, strict=True)):
      try:
        example = self.prepare(record)
        shots = []
        if exemplar_pool is not None:
          exclude = index if split == TRAIN_SPLIT else None
          picks = templates_lib.choose_exemplars(
            len(exemplar_pool), num_shots, index + split_key, seed, exclude
          )
          shots = [exemplar_pool[i] for i in picks]
        for template in chosen:
          prompt, target, options = templates_lib.render_few_shot(
            template, example, shots, add_options=self.spec.add_options, task_name=self.name
          )
          out["inputs"].append(prompt)
          out["targets"].append(target)
          out["template_id"].append(template.template_id)
          out["options"].append(templates_lib.join_options(options))
          out["example_index"].append(index)
          out["references"].append(self._references(example))
      except (KeyError, ValueError, IndexError, TypeError) as error:
        raise ValueError(
          f"task {self.name!r}, split {split!r}, example {index}: {error}"
        ) from error
    return out


_TASKS: dict[str, FlanTask] = {}
_TASK_INFOS: dict[str, TaskInfo] = {}


def add_task(spec: TaskSpec) -> FlanTask:
  """Validates a spec and adds it to the table (no file is read; no seqio object is made).

  Raises ValueError for a duplicate name, unknown category, no templates, bad metrics, or only
  inverted templates. `registry.register_flan_task` also registers the seqio Task.
  """
  name = spec.name
  if name in _TASKS:
    raise ValueError(f"task {name!r} is already registered")
  if spec.category not in CATEGORIES + BENCHMARK_CATEGORIES:
    raise ValueError(
      f"task {name!r}: unknown category {spec.category!r}; known: {list(CATEGORIES)} "
      f"(and, for the held-out benchmarks, {list(BENCHMARK_CATEGORIES)})"
    )
  if not spec.templates:
    raise ValueError(f"task {name!r}: needs at least one template")
  if not spec.metrics or not all(isinstance(m, str) and m for m in spec.metrics):
    raise ValueError(f"task {name!r}: metrics must be a non-empty list of metric names")
  task = FlanTask(spec)
  if not task.eval_templates:
    raise ValueError(f"task {name!r}: every template is inverted; eval splits need one that isn't")
  _TASKS[name] = task
  _TASK_INFOS[name] = TaskInfo(
    name=name,
    category=spec.category,
    metrics=tuple(spec.metrics),
    has_options=task.has_options,
    template_ids=tuple(t.template_id for t in task.train_templates),
    eval_template_ids=tuple(t.template_id for t in task.eval_templates),
    num_shots=spec.num_shots,
    family=spec.family,
    source=repr(task.source),
  )
  return task


def remove_task(name: str) -> None:
  """Drops a task from the table (registration failed half-way)."""
  _TASKS.pop(name, None)
  _TASK_INFOS.pop(name, None)


def get_task_info(name: str) -> TaskInfo:
  """Category, metric names, options flag and template ids of a registered FLAN task.

  >>> get_task_info("toy_add").category                # after `import mixtures`
  'closed_book_qa'
  """
  if name not in _TASK_INFOS:
    raise KeyError(f"unknown FLAN task {name!r}; known: {sorted(_TASK_INFOS)}")
  return _TASK_INFOS[name]


def get_flan_task(name: str) -> FlanTask:
  """The registered task (spec, templates, rendering); KeyError lists the known ones."""
  get_task_info(name)
  return _TASKS[name]


def is_flan_task(name: str) -> bool:
  return name in _TASKS


def list_flan_tasks(family: str | None = None) -> list[str]:
  """Sorted names of registered FLAN tasks (of one family: "flan" or "toy")."""
  return sorted(n for n, info in _TASK_INFOS.items() if family in (None, info.family))
