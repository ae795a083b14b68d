"""flanjax.data.vocab: which vocabulary tasks get (bytes by default, SentencePiece by path)."""

import pytest
import seqio

from flanjax.data import vocab
from flanjax.data.context import DataContext


def test_vocabulary_resolution(tmp_path, monkeypatch):
  monkeypatch.setenv("FLANJAX_VOCAB", str(tmp_path / "missing.model"))  # No longer read.
  assert isinstance(vocab.get_vocabulary(), seqio.ByteVocabulary)
  assert isinstance(DataContext().vocabulary(), seqio.ByteVocabulary)
  with pytest.raises(FileNotFoundError, match="spiece.model"):
    vocab.get_vocabulary(tmp_path)
  with pytest.raises(FileNotFoundError, match="missing.model.*config.vocab"):
    DataContext(vocab=str(tmp_path / "missing.model")).vocabulary()


def test_lazy_vocabulary_builds_on_first_use():
  built = []
  lazy = vocab.LazyVocabulary(lambda: built.append(1) or seqio.ByteVocabulary(), "bytes")
  assert built == []
  assert lazy.encode("ab") == [100, 101] and lazy.vocab_size == 259 and lazy.eos_id == 1
  assert lazy.decode([100, 101, 1, 5]) == "ab" and built == [1]
  assert vocab.resolve(lazy) == seqio.ByteVocabulary()


def test_sentencepiece_training_conventions(tmp_path):
  texts = [f"the {w} sat on the mat number {i}" for i in range(200) for w in ("cat", "dog")]
  path = vocab.train_sentencepiece(texts, 64, str(tmp_path / "v.model"))
  vocabulary = vocab.get_vocabulary(tmp_path / "v.model")
  import sentencepiece as spm

  raw = spm.SentencePieceProcessor(model_file=path)
  pieces = raw.get_piece_size()  # At most 64: this corpus is tiny.
  assert path.endswith("v.model") and 16 <= pieces <= 64
  assert vocabulary.vocab_size == pieces + vocab.NUM_SENTINELS
  assert (
    vocabulary.tokenizer.id_to_piece(0) == "<pad>" and vocabulary.tokenizer.id_to_piece(1) == "</s>"
  )
  (tmp_path / "pretrained").mkdir()
  (tmp_path / "pretrained" / "spiece.model").write_bytes((tmp_path / "v.model").read_bytes())
  assert vocab.get_vocabulary(tmp_path / "pretrained").vocab_size == pieces + 100
  assert DataContext(vocab=str(tmp_path / "pretrained")).vocabulary().vocab_size == pieces + 100
  assert vocab.get_vocabulary(path) is vocab.get_vocabulary(path)  # one object per file
