"""flanjax.data.inspect: what `tools/launch.py tasks | show | vocab` print and write."""

import io
import os

import pytest
import seqio

import mixtures  # noqa: F401
from flanjax.data import DEFAULT, DataContext, inspect, vocab

HAS_DATA = os.path.isdir(os.environ.get("FLANJAX_DATA_DIR", "/nonexistent"))


def test_list_tasks_shows_tasks_categories_mixtures_and_rows():
  out = io.StringIO()
  inspect.list_tasks(DEFAULT, out)
  text = out.getvalue()
  lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
  assert lines["toy_add"][1:4] == ["toy", "closed_book_qa", "3"]
  assert lines["toy_add"][-3:] == ["2000", "100", "100"]
  assert "categories: natural_language_inference" in text
  assert "toy_holdout_paraphrase" in lines and "flan_mini" in lines
  if HAS_DATA:
    # cb: 250 train rows, the last 62 (a quarter) are its selection split, never trained on.
    assert lines["cb"][-3:] == ["188", "56", "-"]
    assert lines["nq_open"][-3:] == ["-", "2000", "1769"]


def test_show_task_prints_every_template():
  out = io.StringIO()
  inspect.show_task(DEFAULT, "toy_sentiment", n=2, out=out)
  text = out.getvalue()
  assert text.count("=== toy_sentiment [validation] example") == 6
  assert "example 1, template 2" in text and "OPTIONS:\n- positive\n- negative" in text
  with pytest.raises(ValueError, match="no split 'dev'"):
    inspect.show_task(DEFAULT, "toy_sentiment", split="dev")


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_show_n_means_n_examples_on_every_split(split):
  out = io.StringIO()
  inspect.show_task(DEFAULT, "toy_add", n=4, split=split, out=out)
  headers = [line for line in out.getvalue().splitlines() if line.startswith("===")]
  assert {line.split(" example ")[1].split(",")[0] for line in headers} == {"0", "1", "2", "3"}
  assert len(headers) == 4 * (1 if split == "train" else 3)  # eval splits: every template


def test_train_vocab_has_t5_conventions(tmp_path):
  path = inspect.train_vocab(DEFAULT, "toy_eval_misc", 120, str(tmp_path / "toy.model"))
  vocabulary = vocab.get_vocabulary(path)
  assert isinstance(vocabulary, seqio.SentencePieceVocabulary)
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  assert vocabulary.vocab_size == 120 + 100  # 100 sentinel ids at the top
  assert vocabulary.decode(vocabulary.encode("Reverse: cat dog")) == "Reverse: cat dog"


def test_list_tasks_counts_rows_in_the_context_data_dir(tmp_path):
  out = io.StringIO()
  inspect.list_tasks(DataContext(data_dir=str(tmp_path)), out)
  lines = {line.split()[0]: line.split() for line in out.getvalue().splitlines() if line.strip()}
  assert lines["sst2"][-3:] == ["?", "?", "?"]  # the empty data dir has no sst2 folder
  assert lines["toy_add"][-3:] == ["2000", "100", "100"]


def test_one_empty_split_file_breaks_only_its_task(tmp_path):
  from flanjax.data import DataContext, eval_data

  (tmp_path / "cb").mkdir()
  (tmp_path / "cb" / "train.jsonl").write_text("")  # empty: broken
  (tmp_path / "cb" / "validation.jsonl").write_text("")
  ctx = DataContext(data_dir=str(tmp_path), toy_vocab="bytes")
  out = io.StringIO()
  inspect.list_tasks(ctx, out)  # the listing still works, every other task included
  assert "toy_add" in out.getvalue() and "cb" in out.getvalue()
  assert eval_data.eval_rows(ctx, "toy_add", "validation")  # other tasks are untouched
  with pytest.raises(ValueError, match=r"cb.*is empty"):
    eval_data.eval_rows(ctx, "cb", "validation")
