"""Vocabularies with T5's conventions: pad 0, eos 1, unk 2, 100 sentinel ids at the top.

A `DataContext` chooses the vocabulary (never an environment variable): `get_vocabulary(None)`
is `seqio.ByteVocabulary()` (259 ids, no file), so `import mixtures` needs no file and no
network; a path is a SentencePiece `.model` file (e.g. one trained by `train_sentencepiece`) or a
pretrained model directory holding `spiece.model` (T5's own vocabulary, the one HF checkpoints
ship). `LazyVocabulary` defers building one (the toy vocabulary trains a model) to first use.

>>> get_vocabulary().vocab_size
259
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable, Iterable

import seqio
import tensorflow as tf

NUM_SENTINELS = 100


def resolve_vocab_path(path: str | os.PathLike | None) -> str | None:
  """A `.model` file, or `<dir>/spiece.model`; None when no vocabulary is configured."""
  if path is None or os.fspath(path) == "":
    return None
  path = os.fspath(path)
  if os.path.isdir(path):
    candidate = os.path.join(path, "spiece.model")
    if not os.path.exists(candidate):
      raise FileNotFoundError(
        f"vocabulary dir {path!r} has no spiece.model (config.vocab / DataContext.vocab must be "
        "a SentencePiece .model file or a pretrained T5 dir)"
      )
    return candidate
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"vocabulary file {path!r} not found (from config.vocab / DataContext.vocab)"
    )
  return path


def get_vocabulary(path: str | os.PathLike | None = None) -> seqio.Vocabulary:
  """SentencePiece vocabulary (+100 sentinels) from `path` (one object per file), else bytes."""
  return _load(resolve_vocab_path(path))


@functools.cache
def _load(model_path: str | None) -> seqio.Vocabulary:
  if model_path is None:
    return seqio.ByteVocabulary()
  return seqio.SentencePieceVocabulary(model_path, extra_ids=NUM_SENTINELS)


class LazyVocabulary(seqio.Vocabulary):
  """A vocabulary built by `build()` the first time it is used (then delegated to).

  >>> lazy = LazyVocabulary(seqio.ByteVocabulary, "bytes")    # nothing built yet
  >>> lazy.encode("a"), lazy.vocab_size
  ([100], 259)
  """

  def __init__(self, build: Callable[[], seqio.Vocabulary], name: str):
    super().__init__(extra_ids=0)
    self._build = build
    self._name = name
    self._built: seqio.Vocabulary | None = None
    self._lock = threading.Lock()

  def __repr__(self):
    return f"LazyVocabulary({self._name!r})"

  @tf.autograph.experimental.do_not_convert  # may first run inside seqio's tf.data map
  def resolve(self) -> seqio.Vocabulary:
    with self._lock:
      if self._built is None:
        self._built = self._build()
      return self._built

  def __eq__(self, other):
    if isinstance(other, LazyVocabulary):
      return self._name == other._name or self.resolve() == other.resolve()
    return self.resolve() == other

  def __hash__(self):
    return hash(self._name)

  @property
  def eos_id(self):
    return self.resolve().eos_id

  @property
  def unk_id(self):
    return self.resolve().unk_id

  @property
  def pad_id(self):
    return self.resolve().pad_id

  @property
  def bos_id(self):
    return self.resolve().bos_id

  @property
  def extra_ids(self):
    return self.resolve().extra_ids

  @property
  def vocab_size(self):
    return self.resolve().vocab_size

  @property
  def _base_vocab_size(self):
    return self.resolve()._base_vocab_size

  def _encode(self, s):
    return self.resolve()._encode(s)

  def _decode(self, ids):
    return self.resolve()._decode(ids)

  def _encode_tf(self, s):
    return self.resolve()._encode_tf(s)

  def _decode_tf(self, ids):
    return self.resolve()._decode_tf(ids)

  def encode(self, s):
    return self.resolve().encode(s)

  def decode(self, ids):
    return self.resolve().decode(ids)

  def encode_tf(self, s):
    return self.resolve().encode_tf(s)

  def decode_tf(self, ids):
    return self.resolve().decode_tf(ids)


def resolve(vocabulary: seqio.Vocabulary) -> seqio.Vocabulary:
  """The concrete vocabulary behind a `LazyVocabulary` (others pass through)."""
  return vocabulary.resolve() if isinstance(vocabulary, LazyVocabulary) else vocabulary


def train_sentencepiece(texts: Iterable[str], size: int, out_path: str) -> str:
  """Trains a T5-style SentencePiece unigram model on `texts`; returns `out_path`.

  `size` is the number of SentencePiece pieces (T5 used 32,000; a corpus too small for that many
  gives fewer); `get_vocabulary(out_path)` adds the 100 sentinel ids on top (T5: 32,000 + 100 =
  32,100 ids).
  >>> train_sentencepiece(["a b c"] * 100, 20, "/tmp/v.model")  # doctest: +SKIP
  """
  import sentencepiece as spm

  if size < 8:
    raise ValueError(f"vocab size must be at least 8, got {size}")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=size,
    model_type="unigram",
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    character_coverage=1.0,
    byte_fallback=size >= 1024,  # The 256 byte pieces only pay off in a large vocabulary.
    hard_vocab_limit=False,
    input_sentence_size=200_000,
    shuffle_input_sentence=True,
    minloglevel=2,
  )
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "wb") as handle:
    handle.write(model.getvalue())
  return out_path
