"""The synthetic toy family: deterministic, small, categorised, with OPTIONS tasks."""

import collections

import mixtures  # noqa: F401  (registers the toy tasks)
from flanjax.data import tasks, toy


def test_toy_family_has_three_or_more_categories_with_two_tasks_each():
  names = tasks.list_flan_tasks(family="toy")
  assert set(names) == set(toy.TOY_TASKS) and all(n.startswith("toy_") for n in names)
  per_category = collections.Counter(tasks.get_task_info(n).category for n in names)
  assert len(per_category) >= 3 and min(per_category.values()) >= 2
  assert any(tasks.get_task_info(n).has_options for n in names)
  assert all(len(tasks.get_task_info(n).template_ids) >= 3 for n in names)


def test_toy_examples_are_deterministic_and_short():
  for name, (generate, *_rest) in toy.TOY_TASKS.items():
    first, again = toy.ToySource(generate, seed=0), toy.ToySource(generate, seed=0)
    assert first.load("train") == again.load("train"), name
    assert first.load("train") != toy.ToySource(generate, seed=1).load("train"), name
    assert first.count("validation") == len(first.load("validation")) == 100
    rendered = tasks.get_task_spec(name).render_split("train")
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
  assert set(tasks.task_names_of("toy")) == set(toy.TOY_TASKS)
  assert "toy_sentiment" not in tasks.task_names_of("toy_holdout_sentiment")
  assert set(tasks.task_names_of("toy_eval_sentiment")) == {"toy_sentiment", "toy_sentiment_vote"}
