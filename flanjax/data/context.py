"""The data context: which data dir and vocabularies the tasks read with, passed explicitly.

A `DataContext` is a frozen value; two of them live side by side in one process. `import
mixtures` registers every FLAN task once, as data (`tasks.TaskSpec`), and the seqio objects for
`DEFAULT` under the plain names (`seqio.get_mixture_or_task("sst2")` keeps working). Any other
context gets, on demand, seqio twins under qualified names (`sst2#1a2b3c4d`) whose source reads
its data dir and whose features use its vocabulary; reports use the plain names.

>>> import mixtures
>>> spm = DataContext(data_dir="../shared/data", vocab="runs/vocab/spm.model")
>>> DEFAULT.vocabulary_of("sst2").vocab_size, spm.vocabulary_of("sst2").vocab_size  # doctest: +SKIP
(259, 32100)
>>> spm.get("flan_mini").name                                              # doctest: +SKIP
'flan_mini#5e0c1f2a'
>>> spm.task_names("flan_mini_eval_sentiment")
['sst2']
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from collections.abc import Sequence

import seqio
import tensorflow as tf

from flanjax.data import sources as sources_lib
from flanjax.data import tasks as tasks_lib
from flanjax.data import vocab as vocab_lib

QUALIFIER = "#"  # `<plain name>#<context key>` names a twin bound to a non-default context.
_lock = threading.RLock()


def plain_name(name: str) -> str:
  """`plain_name("sst2#1a2b3c4d") == "sst2"` (plain names pass through)."""
  return name.partition(QUALIFIER)[0]


@dataclasses.dataclass(frozen=True)
class DataContext:
  """Data dir and vocabularies the tasks read with.

  data_dir: None reads env `FLANJAX_DATA_DIR` when data is read (never at import); `"hf:"`
    loads every dataset's hub twin.
  vocab: a SentencePiece `.model` file or a dir holding `spiece.model`; None: bytes.
  toy_vocab: the toy tasks' vocabulary: "" the word-level SentencePiece trained by code,
    "bytes", or a `.model` path.
  >>> DataContext(toy_vocab="bytes").vocabulary_of("toy").vocab_size   # after `import mixtures`
  259
  """

  data_dir: str | None = None
  vocab: str | None = None
  toy_vocab: str = ""
  benchmark_dir: str | None = None  # None: env FLANJAX_BENCHMARK_DIR when a benchmark is read

  @staticmethod
  def default() -> DataContext:
    return DEFAULT

  @functools.cached_property
  def key(self) -> str:
    """ "" for the default context, else a short hash naming this context's seqio twins."""
    if self == DataContext():
      return ""
    fields = repr((self.data_dir, self.vocab, self.toy_vocab, self.benchmark_dir)).encode()
    return hashlib.sha1(fields).hexdigest()[:8]

  def qualified(self, name: str) -> str:
    """The seqio name of `name` in this context: `"sst2"` (default) or `"sst2#1a2b3c4d"`."""
    return f"{name}{QUALIFIER}{self.key}" if self.key else name

  def resolved_data_dir(self, required: bool = True) -> str | None:
    """`data_dir`, else env FLANJAX_DATA_DIR (read now); a clear error when required and unset."""
    path = self.data_dir or os.environ.get(sources_lib.DATA_DIR_ENV) or None
    if required and not path:
      raise FileNotFoundError(
        f"no data dir configured: set config.data_dir (DataContext(data_dir=...)) or env "
        f"{sources_lib.DATA_DIR_ENV} (e.g. ../shared/data)"
      )
    return path

  def vocabulary(self) -> seqio.Vocabulary:
    """The real tasks' vocabulary: SentencePiece from `vocab` (one object per file), or bytes."""
    return vocab_lib.get_vocabulary(self.vocab)

  def task_vocabulary(self, task_name: str) -> seqio.Vocabulary:
    """The vocabulary a FLAN task tokenises with here (concrete, never lazy)."""
    spec = tasks_lib.get_flan_task(task_name).spec
    if spec.vocabulary is None:
      return self.vocabulary()
    if isinstance(spec.vocabulary, seqio.Vocabulary):
      return vocab_lib.resolve(spec.vocabulary)
    return vocab_lib.resolve(spec.vocabulary(self))

  def vocabulary_of(self, mixture_or_task: str) -> seqio.Vocabulary:
    """Targets vocabulary of a mixture or task in this context (toy tasks: the toy vocabulary)."""
    names = self.task_names(mixture_or_task)
    if tasks_lib.is_flan_task(names[0]):
      return self.task_vocabulary(names[0])
    return vocab_lib.resolve(self.get(names[0]).output_features["targets"].vocabulary)

  def task_names(self, mixture_or_task: str) -> list[str]:
    """Plain FLAN task names of a mixture (sorted as seqio does), or `[name]` for a task."""
    provider = _plain_provider(mixture_or_task)
    if isinstance(provider, seqio.Mixture):
      return [t.name for t in provider.tasks]
    return [provider.name]

  def get(self, mixture_or_task: str) -> seqio.Task | seqio.Mixture:
    """The seqio Task or Mixture bound to this context (data dir and vocabulary).

    The default context returns the plain registered object; another context registers (once)
    and returns its twin. Unknown names raise ValueError listing known mixtures and tasks.
    """
    name = plain_name(mixture_or_task)
    qualified = self.qualified(name)
    with _lock:
      if qualified in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(qualified)
      if qualified in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(qualified)
      if tasks_lib.is_flan_task(name):
        return _register_task(self, name)
      provider = _plain_provider(name)
      if isinstance(provider, seqio.Task):
        raise ValueError(
          f"task {name!r} was registered with seqio directly, not as a FLAN task: it has no "
          "data context; register it with flanjax.data.register_flan_task to use it here"
        )
      twins = [(self.get(entry).name, rate) for entry, rate in provider.rate_per_task_name.items()]
      return seqio.MixtureRegistry.add(qualified, twins)

  def source_dir(self, task_name: str) -> str | None:
    """Where a task's files are: the benchmark dir for the held-out benchmarks (config, else env
    FLANJAX_BENCHMARK_DIR), the data dir for every other task."""
    if tasks_lib.get_task_info(task_name).family == "benchmark":
      return self.benchmark_dir or os.environ.get("FLANJAX_BENCHMARK_DIR") or None
    return self.resolved_data_dir(required=False)

  def rendered_split(self, task_name: str, split: str) -> dict[str, list]:
    """A FLAN task's rendered split under this context's data dir (see `tasks.FlanTask`)."""
    task = tasks_lib.get_flan_task(task_name)
    return task.render_split(split, self.source_dir(task_name))

  def bound_source(self, task_name: str):
    """A FLAN task's source reading under this context's data dir."""
    task = tasks_lib.get_flan_task(task_name)
    return task.bound_source(self.source_dir(task_name))


DEFAULT = DataContext()


def _plain_provider(name: str) -> seqio.Task | seqio.Mixture:
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  known = sorted(n for n in seqio.MixtureRegistry.names() if QUALIFIER not in n)
  raise ValueError(
    f"unknown mixture or task {name!r} (did you `import mixtures`?); known mixtures: {known}; "
    f"known FLAN tasks: {tasks_lib.list_flan_tasks()}"
  )


class FlanDataSource(seqio.DataSource):
  """seqio DataSource of a FLAN task in a context: rendered examples (rendered once per split
  and data dir, in Python); the data dir is resolved when data is read."""

  def __init__(self, task: tasks_lib.FlanTask, context: DataContext):
    self._task = task
    self._context = context
    super().__init__(splits=(), caching_permitted=False)

  def _source(self):
    return self._context.bound_source(self._task.name)

  @property
  def splits(self) -> Sequence[str]:
    return self._source().splits

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def num_input_examples(self, split: str) -> int:
    return self._source().count(split)

  def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused):
    del unused
    rendered = self._context.rendered_split(self._task.name, split)
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


def _feature_vocabulary(context: DataContext, task: tasks_lib.FlanTask) -> seqio.Vocabulary:
  """The features' vocabulary: fixed, the context's, or built lazily (toy vocabulary)."""
  chosen = task.spec.vocabulary
  if isinstance(chosen, seqio.Vocabulary):
    return chosen
  if chosen is None and context.vocab is None:
    return seqio.ByteVocabulary()
  name = f"{task.name}/{context.qualified('')}"
  return vocab_lib.LazyVocabulary(lambda: context.task_vocabulary(task.name), name)


def _register_task(context: DataContext, name: str) -> seqio.Task:
  task = tasks_lib.get_flan_task(name)
  vocabulary = _feature_vocabulary(context, task)
  features = {
    "inputs": seqio.Feature(vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary, add_eos=True),
  }
  return seqio.TaskRegistry.add(
    context.qualified(name),
    source=FlanDataSource(task, context),
    output_features=features,
    preprocessors=[
      functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=True),
      seqio.preprocessors.append_eos_after_trim,
    ],
    metric_fns=[],
  )
