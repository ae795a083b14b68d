"""The synthetic toy family: deterministic, small, categorised, with OPTIONS tasks."""

import collections

import mixtures  # noqa: F401  (registers the toy tasks)
from flanjax.data import DEFAULT, DataContext, tasks, toy

TOY = [spec.name for spec in toy.TOY_TASKS]


def test_toy_family_has_three_or_more_categories_with_two_tasks_each():
  names = tasks.list_flan_tasks(family="toy")
  assert set(names) == set(TOY) and all(n.startswith("toy_") for n in names)
  per_category = collections.Counter(tasks.get_task_info(n).category for n in names)
  assert len(per_category) >= 3 and min(per_category.values()) >= 2
  assert any(tasks.get_task_info(n).has_options for n in names)
  assert all(len(tasks.get_task_info(n).template_ids) >= 3 for n in names)


def test_toy_examples_are_deterministic_and_short():
  for spec in toy.TOY_TASKS:
    name, generate = spec.name, spec.source.generate
    first, again = toy.ToySource(generate, seed=0), toy.ToySource(generate, seed=0)
    assert first.load("train") == again.load("train"), name
    assert first.load("train") != toy.ToySource(generate, seed=1).load("train"), name
    assert first.count("validation") == len(first.load("validation")) == 100
    rendered = DEFAULT.rendered_split(name, "train")
    assert max(len(s.encode()) for s in rendered["inputs"]) <= 96, name
    assert max(len(s.encode()) for s in rendered["targets"]) <= 16, name


def test_toy_answers_are_right():
  reverse = toy._reverse_words(toy.np.random.default_rng(0))
  assert reverse["answer"].split() == reverse["words"].split()[::-1]
  add = toy._add_numbers(toy.np.random.default_rng(1))
  assert int(add["answer"]) == add["x"] + add["y"]
  compare = toy._nli_compare(toy.np.random.default_rng(2))
  assert compare["answer"] == ("yes" if compare["count"] > compare["bound"] else "no")


def test_toy_mixtures_exist():
  assert set(DEFAULT.task_names("toy")) == set(TOY)
  assert "toy_sentiment" not in DEFAULT.task_names("toy_holdout_sentiment")
  assert set(DEFAULT.task_names("toy_eval_sentiment")) == {"toy_sentiment", "toy_sentiment_vote"}


def test_toy_vocabulary_is_word_level_and_round_trips_targets():
  vocabulary = toy.toy_vocabulary()
  assert DEFAULT.vocabulary_of("toy") is vocabulary
  assert vocabulary.vocab_size <= 384  # fits the demo model
  for word in toy.NOUNS + toy.GOOD + toy.BAD:
    last = vocabulary.encode(f"Repeat: {word}")[-1]
    assert vocabulary.decode([last]).strip() == word, word  # one id per lexicon word
  for target in ("car egg cup", "abcde", "yes", "positive", "17"):
    assert vocabulary.decode(vocabulary.encode(target)) == target
  assert len(vocabulary.encode("Repeat: car egg cup")) < len("Repeat: car egg cup") / 2
  assert toy.toy_vocabulary("bytes").vocab_size == 259
  assert DataContext(toy_vocab="bytes").vocabulary_of("toy_add").vocab_size == 259
  # The real tasks' vocabulary is separate: toy tasks keep theirs in every context.
  assert DataContext(toy_vocab="bytes").vocabulary_of("toy") != vocabulary
