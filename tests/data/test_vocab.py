"""flanjax.data.vocab: which vocabulary tasks get (bytes by default, SentencePiece by path)."""

import pytest
import seqio

from flanjax.data import vocab


def test_vocabulary_resolution(tmp_path, monkeypatch):
  monkeypatch.delenv(vocab.VOCAB_ENV, raising=False)
  assert isinstance(vocab.get_vocabulary(), seqio.ByteVocabulary)
  with pytest.raises(FileNotFoundError, match="spiece.model"):
    vocab.get_vocabulary(tmp_path)
  monkeypatch.setenv(vocab.VOCAB_ENV, str(tmp_path / "missing.model"))
  with pytest.raises(FileNotFoundError, match="FLANJAX_VOCAB"):
    vocab.get_vocabulary()


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
