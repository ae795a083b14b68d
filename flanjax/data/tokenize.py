"""The token cache: a FLAN task split in a data context as ragged numpy token arrays.

>>> data = load_tokenized(DataContext(toy_vocab="bytes"), "toy_add", "validation")
>>> len(data), int(data.inputs(0)[-1])     # 100 examples x 3 templates; EOS ends each
(300, 1)
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import seqio
import tensorflow as tf

from flanjax.data import tasks as tasks_lib
from flanjax.data.context import DataContext

EOS_ID = 1
_cache_lock = threading.Lock()
_TOKEN_CACHE: dict[tuple, TokenizedSplit] = {}


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
  """A task split as ragged token arrays: example i's inputs are
  `inputs_values[inputs_splits[i]:inputs_splits[i + 1]]` (EOS included)."""

  inputs_values: np.ndarray  # [total_input_tokens] int32
  inputs_splits: np.ndarray  # [num_examples + 1] int64
  targets_values: np.ndarray  # [total_target_tokens] int32
  targets_splits: np.ndarray  # [num_examples + 1] int64

  def __len__(self) -> int:
    return len(self.inputs_splits) - 1

  def inputs(self, i: int) -> np.ndarray:
    return self.inputs_values[self.inputs_splits[i] : self.inputs_splits[i + 1]]


def _cache_key(context: DataContext, task_name: str, split: str) -> tuple:
  data_dir = context.source_dir(task_name)
  return (data_dir, context.vocab, context.toy_vocab, task_name, split)


def load_tokenized(context: DataContext, task_name: str, split: str) -> TokenizedSplit:
  """A task split's tokens in `context`, computed once per process (unshuffled, untrimmed, EOS
  appended). The cache key is the context's resolved data dir and vocabularies.

  FLAN tasks with a byte or SentencePiece vocabulary are tokenized straight from their rendered
  strings (in numpy / SentencePiece's batch encoder: same ids as the task's seqio preprocessors,
  many times faster); any other task runs its own seqio pipeline.
  """
  key = _cache_key(context, task_name, split)
  with _cache_lock:
    if key in _TOKEN_CACHE:
      return _TOKEN_CACHE[key]
  result = tokenize_rendered(context, task_name, split)
  if result is None:
    result = tokenize_with_seqio(context, task_name, split)
  with _cache_lock:
    _TOKEN_CACHE[key] = result
  return result


def encode_many(
  vocabulary: seqio.Vocabulary, texts: list[str]
) -> tuple[np.ndarray, np.ndarray] | None:
  """(flat ids with EOS after each text, row splits), or None for other vocabularies.

  >>> encode_many(seqio.ByteVocabulary(), ["ab", ""])
  (array([100, 101,   1,   1], dtype=int32), array([0, 3, 4]))
  """
  if type(vocabulary) is seqio.ByteVocabulary and not vocabulary.extra_ids:
    encoded = [text.encode("utf-8") for text in texts]
    lengths = np.fromiter((len(e) + 1 for e in encoded), np.int64, len(encoded))
    flat = np.frombuffer(b"\x00".join(encoded) + b"\x00", np.uint8).astype(np.int32) + 3
    flat[np.cumsum(lengths) - 1] = EOS_ID  # The b"\x00" separators become the EOS slots.
  elif isinstance(vocabulary, seqio.SentencePieceVocabulary):
    ids = vocabulary.tokenizer.encode(texts)
    lengths = np.fromiter((len(i) + 1 for i in ids), np.int64, len(ids))
    flat = np.fromiter((t for row in ids for t in (*row, EOS_ID)), np.int32, int(lengths.sum()))
  else:
    return None
  return flat, np.concatenate([[0], np.cumsum(lengths)])


def tokenize_rendered(context: DataContext, task_name: str, split: str) -> TokenizedSplit | None:
  """Tokens of a FLAN task's rendered split; None for a non-FLAN task or another vocabulary."""
  if not tasks_lib.is_flan_task(task_name):
    return None
  vocabulary = context.task_vocabulary(task_name)
  rendered = context.rendered_split(task_name, split)
  arrays = []
  for name in ("inputs", "targets"):
    encoded = encode_many(vocabulary, rendered[name])
    if encoded is None:
      return None
    arrays += encoded
  return TokenizedSplit(*arrays)


def tokenize_with_seqio(context: DataContext, task_name: str, split: str) -> TokenizedSplit:
  """Tokens through the task's own seqio pipeline (`context.get(task_name).get_dataset`)."""
  task = context.get(task_name)
  dataset = task.get_dataset(
    sequence_length=None, split=split, shuffle=False, num_epochs=1, use_cached=False
  )
  dataset = dataset.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]})
  parts: dict[str, list[np.ndarray]] = {"inputs": [], "targets": []}
  counts: dict[str, list[np.ndarray]] = {"inputs": [], "targets": []}
  for chunk in dataset.ragged_batch(8192):
    for name in ("inputs", "targets"):
      ragged: tf.RaggedTensor = chunk[name]
      parts[name].append(ragged.flat_values.numpy().astype(np.int32))
      counts[name].append(ragged.row_lengths().numpy())
  if not counts["inputs"]:
    raise ValueError(f"task {task_name!r} split {split!r} has no examples")
  return TokenizedSplit(
    *(
      array
      for name in ("inputs", "targets")
      for array in (
        np.concatenate(parts[name]),
        np.concatenate([[0], np.cumsum(np.concatenate(counts[name]))]).astype(np.int64),
      )
    )
  )
