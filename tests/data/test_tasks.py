"""Registration of FLAN tasks, the shipped tasks on ../shared/data, and held-out mixtures."""

import json
import os
import uuid

import pytest
import seqio

import mixtures  # noqa: F401  (registers the shipped tasks)
from flanjax.data import DEFAULT, DataContext, registry, sources, tasks
from mixtures import flan_mini

FLAN_MINI = [spec.name for spec in flan_mini.TASKS]

HAS_DATA = os.path.isdir(os.environ.get("FLANJAX_DATA_DIR", "/nonexistent"))
needs_data = pytest.mark.skipif(not HAS_DATA, reason="FLANJAX_DATA_DIR not set (make test sets it)")


def _name(prefix="t"):
  return f"test_{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dataset(tmp_path):
  folder = tmp_path / "tiny"
  folder.mkdir()
  rows = [{"text": f"text {i}", "label": i % 2} for i in range(6)]
  for split in ("train", "validation"):
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(folder)


def _label(ex):
  return {**ex, "answer": ["no", "yes"][ex["label"]]}


def test_template_with_missing_field_fails_at_first_use(dataset):
  name = _name()
  registry.register_flan_task(  # Registration reads no file: the check runs on first use.
    name,
    source=dataset,
    category="sentiment",
    metrics=["accuracy"],
    preprocess=_label,
    templates=[("{text}", "{answer}"), ("{sentence}?", "{answer}")],
    options=["no", "yes"],
  )
  for _ in range(2):  # Still raising the second time (nothing half-rendered is cached).
    with pytest.raises(ValueError, match=rf"task '{name}': template 1 .*\['sentence'\]"):
      DEFAULT.rendered_split(name, "validation")
  with pytest.raises(ValueError, match=rf"task '{name}': template 1 .*\['sentence'\]"):
    next(DEFAULT.get(name).get_dataset(None, "train").as_numpy_iterator())


def test_label_outside_options_fails_at_first_use(dataset):
  name = _name()
  registry.register_flan_task(
    name,
    source=dataset,
    category="sentiment",
    metrics=["accuracy"],
    preprocess=_label,
    templates=[("{text}", "{answer}")],
    options=["negative", "positive"],
  )
  with pytest.raises(ValueError, match="not one of the options"):
    DEFAULT.rendered_split(name, "train")


def test_undeclared_per_example_options_are_caught_at_first_use(dataset):
  name = _name()
  registry.register_flan_task(
    name,
    source=dataset,
    category="misc",
    metrics=["accuracy"],
    preprocess=lambda ex: {**_label(ex), "options": ["no", "yes"]},
    templates=[("{text}", "{answer}")],
  )
  with pytest.raises(ValueError, match="has_options=True"):
    DEFAULT.rendered_split(name, "validation")


def test_unknown_category_lists_known_ones(dataset):
  with pytest.raises(ValueError, match="unknown category 'sports'.*natural_language_inference"):
    registry.register_flan_task(
      _name(),
      source=dataset,
      category="sports",
      metrics=["accuracy"],
      templates=[("{text}", "{label}")],
    )


def test_duplicate_registration_raises(dataset):
  name = _name()
  kwargs = dict(
    source=dataset, category="misc", metrics=["exact_match"], templates=[("{text}", "{label}")]
  )
  registry.register_flan_task(name, **kwargs)
  with pytest.raises(ValueError, match="already registered"):
    registry.register_flan_task(name, **kwargs)


def test_registered_task_yields_rendered_examples_with_metadata(dataset):
  name = _name()
  registry.register_flan_task(
    name,
    source=dataset,
    category="sentiment",
    metrics=["accuracy"],
    preprocess=_label,
    templates=[("{text}\nGood?", "{answer}"), "Is {{ text }} good? ||| {{ answer }}"],
    options=["no", "yes"],
    vocabulary=seqio.ByteVocabulary(),
  )
  info = tasks.get_task_info(name)
  assert (info.category, info.metrics, info.has_options, info.eval_template_ids) == (
    "sentiment",
    ("accuracy",),
    True,
    (0, 1),
  )
  examples = list(
    seqio.get_mixture_or_task(name)
    .get_dataset(None, "validation", shuffle=False)
    .as_numpy_iterator()
  )
  assert len(examples) == 12  # every example x every template on eval splits
  first = examples[0]
  assert first["inputs_pretokenized"] == b"text 0\nGood?\n\nOPTIONS:\n- no\n- yes"
  assert first["targets_pretokenized"] == b"no"
  assert first["template_id"] == 0 and first["options"] == b"no|||yes"
  assert examples[1]["inputs_pretokenized"].startswith(b"Is text 0 good?")
  assert first["targets"].tolist() == [ord("n") + 3, ord("o") + 3, 1]
  train = list(seqio.get_mixture_or_task(name).get_dataset(None, "train", shuffle=False))
  assert len(train) == 6  # one (deterministic) template per train example


def test_few_shot_task_draws_exemplars_from_train(dataset):
  name = _name()
  registry.register_flan_task(
    name,
    source=dataset,
    category="misc",
    metrics=["exact_match"],
    templates=[("Q: {text}", "{label}")],
    num_shots=2,
  )
  rendered = DEFAULT.rendered_split(name, "train")
  for prompt, index in zip(rendered["inputs"], rendered["example_index"], strict=True):
    shots = prompt.split("\n\n")
    assert len(shots) == 3 and shots[-1] == f"Q: text {index}"
    assert f"Q: text {index}\n" not in "\n\n".join(shots[:-1]) + "\n"


def test_missing_data_dir_does_not_break_registration_but_use_names_env(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "absent"))
  name = _name()
  registry.register_flan_task(
    name,
    source="sst2",
    category="sentiment",
    metrics=["accuracy"],
    templates=[("{sentence}", "{label}")],
  )
  with pytest.raises(FileNotFoundError, match=r"absent/sst2.*FLANJAX_DATA_DIR"):
    DEFAULT.rendered_split(name, "train")
  with pytest.raises(FileNotFoundError, match=r"elsewhere/sst2.*FLANJAX_DATA_DIR"):
    DataContext(data_dir=str(tmp_path / "elsewhere")).rendered_split(name, "train")


def test_unknown_mixture_lists_known_ones():
  with pytest.raises(ValueError, match="unknown mixture or task 'flan_maxi'.*flan_mini.*sst2"):
    DEFAULT.get("flan_maxi")
  with pytest.raises(ValueError, match="unknown mixture or task 'flan_maxi'.*flan_mini"):
    DataContext(toy_vocab="bytes").task_names("flan_maxi")
  with pytest.raises(ValueError, match="unknown category"):
    registry.excluded_categories("sports")


def test_categories_are_flan_2021_clusters():
  assert len(tasks.CATEGORIES) == 12 and "read_comp_with_commonsense" in tasks.CATEGORIES


@pytest.mark.parametrize("prefix", ["flan_mini", "toy"])
def test_holdout_mixtures_exclude_what_flan_excludes(prefix):
  members = DEFAULT.task_names(prefix)
  categories = {tasks.get_task_info(n).category for n in members}
  for category in categories:
    held_out = registry.excluded_categories(category)
    kept = {
      tasks.get_task_info(n).category for n in DEFAULT.task_names(f"{prefix}_holdout_{category}")
    }
    assert not kept & held_out
    assert kept == categories - held_out
    evaluated = {
      tasks.get_task_info(n).category for n in DEFAULT.task_names(f"{prefix}_eval_{category}")
    }
    assert evaluated == {category}
  assert registry.excluded_categories("natural_language_inference") == {
    "natural_language_inference",
    "paraphrase",
  }
  assert registry.excluded_categories("commonsense") == {
    "commonsense",
    "read_comp_with_commonsense",
  }
  assert "read_comp_with_commonsense" in registry.excluded_categories("reading_comprehension")


def test_flan_mini_has_a_task_per_dataset_with_five_templates():
  assert set(DEFAULT.task_names("flan_mini")) == set(FLAN_MINI)
  for name in FLAN_MINI:
    info = tasks.get_task_info(name)
    assert len(info.eval_template_ids) >= 5, name


@needs_data
def test_every_shipped_task_matches_the_manifest():
  with open(os.path.join(os.environ["FLANJAX_DATA_DIR"], "MANIFEST.json")) as handle:
    manifest = {entry["name"]: entry for entry in json.load(handle)}
  assert set(manifest) <= set(FLAN_MINI)
  for name, entry in manifest.items():
    assert tasks.get_task_info(name).category == entry["category"], name


@needs_data
@pytest.mark.parametrize("name", sorted(FLAN_MINI))
def test_every_shipped_task_yields_examples(name):
  task = seqio.get_mixture_or_task(name)
  info = tasks.get_task_info(name)
  for split in task.splits:
    rendered = DEFAULT.rendered_split(name, split)
    count = DEFAULT.bound_source(name).count(split)
    per_example = 1 if split == "train" else len(info.eval_template_ids)
    assert len(rendered["inputs"]) == count * per_example
    assert all(rendered["inputs"]) and all(isinstance(t, str) for t in rendered["targets"])
    if info.has_options and split != "train":
      assert all(
        t in o.split("|||") for t, o in zip(rendered["targets"], rendered["options"], strict=True)
      )
  first = next(task.get_dataset(None, task.splits[-1], shuffle=False).as_numpy_iterator())
  assert first["inputs"][-1] == 1 and len(first["targets"]) >= 1


@needs_data
def test_examples_proportional_rates_with_cap():
  mixture = seqio.get_mixture_or_task("flan_mini")
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  # cb trains on 188 of its 250 rows: the last 62 are its template-selection split.
  assert rates["sst2"] == 3000.0 and rates["cb"] == 188.0 and rates["nq_open"] == 0.0
  rate = registry.examples_proportional_rate(cap=3000, temperature=2.0)
  assert rate(seqio.get_mixture_or_task("sst2")) == pytest.approx(3000**0.5)


def test_has_options_is_declared_when_the_data_is_not_reachable(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "absent"))
  name = _name()
  registry.register_flan_task(
    name,
    source="copa",
    category="commonsense",
    metrics=["accuracy"],
    has_options=True,
    templates=[("{p}", "{answer}")],
    preprocess=lambda ex: {**ex, "options": [ex["a1"], ex["a2"]]},
  )
  assert tasks.get_task_info(name).has_options
  assert tasks.get_task_info("copa").has_options and tasks.get_task_info("openbookqa").has_options


def test_input_inversion_is_optional(dataset):
  from flanjax.data.templates import inverted

  templates = [("{text}", "{answer}"), inverted("Write text whose answer is {answer}", "{text}")]
  names = [_name(), _name()]
  for name, inversion in zip(names, (True, False), strict=True):
    registry.register_flan_task(
      name,
      source=dataset,
      category="misc",
      metrics=["exact_match"],
      templates=templates,
      preprocess=_label,
      input_inversion=inversion,
    )
  assert tasks.get_task_info(names[0]).template_ids == (0, 1)
  assert tasks.get_task_info(names[1]).template_ids == (0,)
  assert tasks.get_task_info(names[0]).eval_template_ids == (0,)
  rendered = DEFAULT.rendered_split(names[1], "train")
  assert set(rendered["template_id"]) == {0}
