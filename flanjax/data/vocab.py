"""Vocabularies with T5's conventions: pad 0, eos 1, unk 2, 100 sentinel ids at the top.

Design: the built-in toy tasks always use `seqio.ByteVocabulary()` (259 ids, no file). Real tasks
use `get_vocabulary()`, resolved from (in order) its `path` argument, env `FLANJAX_VOCAB`, else
the byte vocabulary, so `import mixtures` needs no file and no network. A path may be a
SentencePiece `.model` file (e.g. one trained by `train_sentencepiece`) or a pretrained model
directory holding `spiece.model` (T5's own vocabulary, the one HF checkpoints ship).

>>> get_vocabulary().vocab_size          # no FLANJAX_VOCAB set: bytes
259
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import seqio

VOCAB_ENV = "FLANJAX_VOCAB"
NUM_SENTINELS = 100


def resolve_vocab_path(path: str | os.PathLike | None) -> str | None:
  """A `.model` file, or `<dir>/spiece.model`; None when no vocabulary is configured."""
  path = os.fspath(path) if path is not None else os.environ.get(VOCAB_ENV) or None
  if path is None:
    return None
  if os.path.isdir(path):
    candidate = os.path.join(path, "spiece.model")
    if not os.path.exists(candidate):
      raise FileNotFoundError(
        f"vocabulary dir {path!r} has no spiece.model (set {VOCAB_ENV} to a SentencePiece "
        ".model file or a pretrained T5 dir)"
      )
    return candidate
  if not os.path.exists(path):
    raise FileNotFoundError(f"vocabulary file {path!r} not found (from {VOCAB_ENV} or path=)")
  return path


def get_vocabulary(path: str | os.PathLike | None = None) -> seqio.Vocabulary:
  """SentencePiece vocabulary (+100 sentinels) from `path`/`FLANJAX_VOCAB`, else bytes."""
  model_path = resolve_vocab_path(path)
  if model_path is None:
    return seqio.ByteVocabulary()
  return seqio.SentencePieceVocabulary(model_path, extra_ids=NUM_SENTINELS)


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
