"""flanjax.data.cli: what `tools/launch.py tasks | show | vocab` print and write."""

import io
import os

import pytest
import seqio

import mixtures  # noqa: F401
from flanjax.data import cli, vocab

HAS_DATA = os.path.isdir(os.environ.get("FLANJAX_DATA_DIR", "/nonexistent"))


def test_list_tasks_shows_tasks_categories_mixtures_and_rows():
  out = io.StringIO()
  cli.list_tasks(out)
  text = out.getvalue()
  lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
  assert lines["toy_add"][1:4] == ["toy", "closed_book_qa", "3"]
  assert lines["toy_add"][-3:] == ["2000", "100", "100"]
  assert "categories: natural_language_inference" in text
  assert "toy_holdout_paraphrase" in lines and "flan_mini" in lines
  if HAS_DATA:
    assert lines["cb"][-3:] == ["250", "56", "-"]
    assert lines["nq_open"][-3:] == ["-", "2000", "1769"]


def test_show_task_prints_every_template():
  out = io.StringIO()
  cli.show_task("toy_sentiment", n=2, out=out)
  text = out.getvalue()
  assert text.count("=== toy_sentiment [validation] example") == 6
  assert "example 1, template 2" in text and "OPTIONS:\n- positive\n- negative" in text
  with pytest.raises(ValueError, match="no split 'dev'"):
    cli.show_task("toy_sentiment", split="dev")


def test_train_vocab_has_t5_conventions(tmp_path):
  path = cli.train_vocab("toy_eval_misc", 120, str(tmp_path / "toy.model"))
  vocabulary = vocab.get_vocabulary(path)
  assert isinstance(vocabulary, seqio.SentencePieceVocabulary)
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  assert vocabulary.vocab_size == 120 + 100  # 100 sentinel ids at the top
  assert vocabulary.decode(vocabulary.encode("Reverse: cat dog")) == "Reverse: cat dog"
