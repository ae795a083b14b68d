"""Metrics on hand-made strings whose values are worked out by hand."""

import doctest

import pytest

from flanjax.eval import metrics


def test_rouge_hand_computed():
  # prediction "the cat ran" vs reference "the cat sat": 2 of 3 unigrams, 1 of 2 bigrams.
  scores = metrics.rouge(["the cat sat"], ["the cat ran"])
  assert scores["rouge1"] == pytest.approx(100 * 2 / 3)
  assert scores["rouge2"] == pytest.approx(100 * 1 / 2)
  assert scores["rougeLsum"] == pytest.approx(100 * 2 / 3)


def test_rouge_lsum_uses_sentence_splitting():
  # Summary-level LCS: sentence order does not matter once each sentence is on its own line.
  target = "Tom missed the bus. He was late for work."
  prediction = "He was late for work. Tom missed the bus."
  scores = metrics.rouge([target], [prediction])
  assert scores["rougeLsum"] == pytest.approx(100.0)
  assert scores["rouge2"] < 100.0  # the bigram "bus he" / "work tom" differ


def test_rouge_takes_best_reference_and_averages():
  scores = metrics.rouge([["a b c d", "x y"], "p q"], ["x y", "z"])
  assert scores["rouge1"] == pytest.approx(50.0)


def test_bleu_matches_sacrebleu_and_perfect_match():
  import sacrebleu

  targets = ["the cat sat on the mat", "a dog barked at the moon tonight"]
  predictions = ["the cat sat on a mat", "a dog barked at the moon tonight"]
  expected = sacrebleu.corpus_bleu(predictions, [targets], tokenize="intl").score
  assert metrics.bleu(targets, predictions)["bleu"] == pytest.approx(expected)
  assert metrics.bleu(targets, targets)["bleu"] == pytest.approx(100.0)
  assert 0.0 < expected < 100.0


def test_bleu_with_several_references():
  single = metrics.bleu(["the cat sat on the mat"], ["a cat sat on a mat"])["bleu"]
  multi = metrics.bleu([["the cat sat on the mat", "a cat sat on a mat"]], ["a cat sat on a mat"])[
    "bleu"
  ]
  assert multi == pytest.approx(100.0) and single < 100.0


def test_squad_normalisation_exact_match_and_f1():
  assert metrics.normalize_answer("  The Big, APPLE! ") == "big apple"
  assert metrics.exact_match(["The Big Apple", "Paris"], ["big apple.", "London"]) == {
    "exact_match": 50.0
  }
  # "new york city" vs "in new york": common 2, precision 2/3, recall 2/3 → F1 2/3.
  assert metrics.token_f1(["new york city"], ["in new york"])["f1"] == pytest.approx(200 / 3)
  assert metrics.token_f1([["nope", "new york city"]], ["new york city"])["f1"] == 100.0
  # Both sides normalise to nothing: exact match, but F1 0 as t5 scores it (no shared token).
  assert metrics.squad(["a"], ["the"]) == {"exact_match": 100.0, "f1": 0.0}


def test_trivia_qa_normalisation_matches_flan_for_natural_questions():
  # TriviaQA normalisation replaces punctuation by a space; SQuAD's deletes it.
  assert metrics.normalize_trivia_qa("Jean-Paul Sartre's") == "jean paul sartre s"
  assert metrics.normalize_answer("Jean-Paul Sartre's") == "jeanpaul sartres"
  scores = metrics.trivia_qa(
    [["Jean Paul Sartre", "Sartre"], ["1969"]], ["jean-paul sartre", "1970"]
  )
  assert scores == {"exact_match": 50.0, "f1": 50.0}
  assert metrics.exact_match([["Jean Paul Sartre"]], ["jean-paul sartre"])["exact_match"] == 0.0


def test_glue_f1_counts_invalid_predictions_wrong_and_macro_f1_uses_the_option_set():
  options = ["no", "yes"]
  # gold yes,yes,no,no; predicted yes,maybe(invalid → wrong),yes,no: tp 1, fp 1, fn 1 → F1 50.
  assert metrics.glue_f1(["yes", "yes", "no", "no"], ["yes", "maybe", "yes", "no"], options) == {
    "f1": 50.0
  }
  # An invalid prediction on a "no" example is a false positive, never a free true negative.
  assert metrics.glue_f1(["no", "yes"], ["maybe", "yes"], options)["f1"] == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match="needs the task's options"):
    metrics.glue_f1(["yes"], ["yes"])
  # A capped sample without any "c" gold: FLAN still averages over every class of the task.
  targets, predictions = ["a", "a", "b"], ["a", "b", "b"]
  assert metrics.macro_f1(targets, predictions)["macro_f1"] == pytest.approx(200 / 3)
  with_c = metrics.macro_f1(targets, predictions, options=["a", "b", "c"])["macro_f1"]
  assert with_c == pytest.approx(400 / 9)
  scores = metrics.compute_metrics(["accuracy", "macro_f1"], targets, predictions, ["a", "b", "c"])
  assert scores["macro_f1"] == pytest.approx(400 / 9)


def test_accuracy_and_macro_f1():
  assert metrics.accuracy(["yes", "no", "no", "no"], ["yes", "yes", "no ", "maybe"]) == {
    "accuracy": 50.0
  }
  assert metrics.accuracy([0, 1], [0, 0]) == {"accuracy": 50.0}
  # Class "a": tp 2, predicted 2, gold 3 → 0.8; class "b": tp 1, predicted 2, gold 1 → 2/3.
  f1 = metrics.macro_f1(["a", "a", "a", "b"], ["a", "a", "b", "b"])["macro_f1"]
  assert f1 == pytest.approx(100 * (0.8 + 2 / 3) / 2)


def test_get_metric_fns_and_errors():
  fns = metrics.get_metric_fns(["rouge", "bleu", "exact_match", "f1", "accuracy"])
  assert [f.__name__ for f in fns] == ["rouge", "bleu", "exact_match", "token_f1", "accuracy"]
  with pytest.raises(ValueError, match="unknown metric name.*'meteor'"):
    metrics.get_metric_fns(["meteor"])
  with pytest.raises(ValueError, match="declares no metrics"):
    metrics.get_metric_fns([])
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    metrics.accuracy(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="no examples"):
    metrics.rouge([], [])
  assert metrics.primary_key(["rouge", "bleu"]) == "rougeLsum"
  assert metrics.compute_metrics(["exact_match", "f1"], ["x y"], ["x"]) == {
    "exact_match": 0.0,
    "f1": pytest.approx(100 * 2 / 3),
  }


def test_docstring_examples():
  result = doctest.testmod(metrics)
  assert result.attempted > 5 and result.failed == 0
