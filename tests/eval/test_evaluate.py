"""evaluate() end to end on hand-built EvalTasks with a tiny random T5 (no TensorFlow here)."""

import dataclasses
import doctest
import json

import jax
import numpy as np
import pytest

from flanjax.config import EvalConfig
from flanjax.eval import evaluate as evaluate_lib
from flanjax.eval import rank, scoring
from flanjax.eval.tasks import EvalExample, EvalTask, limit_per_template
from flanjax.model.config import T5Config
from flanjax.model.hf import T5Model

WORDS = ["<pad>", "</s>", "<unk>"] + "yes no maybe cat dog sun red blue is a the ? .".split()


class WordVocabulary:
  """Whitespace words → ids (seqio Vocabulary's encode/decode/eos_id)."""

  eos_id = 1

  def encode(self, text):
    return [WORDS.index(w) if w in WORDS else 2 for w in text.split()]

  def decode(self, ids):
    return " ".join(WORDS[i] if i < len(WORDS) else "<unk>" for i in ids)


VOCAB = WordVocabulary()


@pytest.fixture(scope="module")
def model():
  config = T5Config.tiny(vocab_size=32, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
  return T5Model(config, jax.jit(lambda k: T5Model.init(config).params)(0))


def _examples(num, templates, options, seed=0, length=6):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(num):
    words = " ".join(rng.choice(["cat", "dog", "sun", "red", "blue"], length))
    for template_id in templates:
      text = f"{words} {'is a ?' if template_id == '0' else 'the ?'}"
      target = options[i % len(options)] if options else " ".join(words.split()[:2])
      out.append(
        EvalExample(
          input_ids=tuple(VOCAB.encode(text)) + (1,),
          target=target,
          template_id=template_id,
          options=tuple(options),
          input_text=text,
        )
      )
  return out


def _task(
  name, category, metric_names, options, splits=("validation", "test"), num=5, seed=0, length=6
):
  data = {
    split: _examples(num, ["0", "1"], options, seed + i, length) for i, split in enumerate(splits)
  }

  def load(split, max_examples):
    return limit_per_template(data.get(split, []), max_examples)

  return EvalTask(
    name=name,
    category=category,
    metric_names=tuple(metric_names),
    splits=tuple(splits),
    load=load,
    vocabulary=VOCAB,
  )


def _cfg(**kwargs):
  """EvalConfig with this file's small shapes (batch 4, inputs 16, targets 8) unless given."""
  return EvalConfig(**{"batch_size": 4, "input_length": 16, "target_length": 8, **kwargs})


def _toy_tasks():
  return [
    _task("yes_no", "natural_language_inference", ["accuracy"], ["yes", "no", "maybe"]),
    _task("copy_two", "summarization", ["rouge"], [], seed=10),
    _task(
      "glue_like",
      "natural_language_inference",
      ["accuracy"],
      ["yes", "no"],
      splits=("selection", "validation"),  # no test: FLAN's selection split chooses
      seed=20,
    ),
  ]


def test_report_numbers_follow_the_model(model, tmp_path):
  tasks = _toy_tasks()
  report = evaluate_lib.evaluate(
    model,
    tasks,
    _cfg(split="test"),
    out_dir=tmp_path / "eval" / "step_3",
    step=3,
    heldout_categories=["natural_language_inference"],
  )
  assert report["errors"] == {}
  for ext in ("json", "md", "png"):
    assert (tmp_path / "eval" / "step_3" / f"report.{ext}").is_file()
  assert json.loads((tmp_path / "eval" / "step_3" / "report.json").read_text()) == report

  # Rank-classification accuracy equals what rank_classify itself picks, per template.
  test_examples = tasks[0].load("test", None)
  option_ids = [[tuple(VOCAB.encode(o)) + (1,) for o in e.options] for e in test_examples]
  choices = rank.rank_classify(model, [e.input_ids for e in test_examples], option_ids).choices
  task = report["tasks"]["yes_no"]
  for template_id in ("0", "1"):
    rows = [i for i, e in enumerate(test_examples) if e.template_id == template_id]
    expected = 100 * np.mean(
      [test_examples[i].options[choices[i]] == test_examples[i].target for i in rows]
    )
    assert task["per_template"][template_id]["test"]["accuracy"] == pytest.approx(expected)
  assert task["num_examples"]["test"] == {"0": 5, "1": 5}
  best = task["best_template"]
  assert best["selected_on"] == "validation"
  val = {t: s["validation"]["accuracy"] for t, s in task["per_template"].items()}
  assert val[best["template_id"]] == max(val.values())
  assert task["score"] == task["per_template"][best["template_id"]]["test"]["accuracy"]

  # Decoded task: the stored samples are the model's greedy outputs.
  copy_task = report["tasks"]["copy_two"]
  assert copy_task["primary_metric"] == "rougeLsum" and copy_task["samples"]
  sample = copy_task["samples"][0]
  generated = model.generate(np.asarray([VOCAB.encode(sample["input"]) + [1]]), max_new_tokens=8)[0]
  assert sample["prediction"] == VOCAB.decode(evaluate_lib._strip(generated, 1))

  # A task without a test split is reported on validation, and says so.
  glue = report["tasks"]["glue_like"]
  assert glue["split"] == "validation" and glue["best_template"]["selected_on"] == "selection"
  assert glue["best_template"]["selected_on_report_split"] is False
  nli = report["categories"]["natural_language_inference"]
  assert nli["heldout"] is True and report["categories"]["summarization"]["heldout"] is False
  assert nli["score"] == pytest.approx((task["score"] + glue["score"]) / 2)
  assert nli["chance"] == pytest.approx((100 / 3 + 100 / 2) / 2)  # 3 and 2 options
  assert report["categories"]["summarization"]["chance"] is None  # decoded: no chance level


def test_a_task_with_nothing_to_choose_on_says_so(model, tmp_path):
  only_test = _task("only_test", "sentiment", ["accuracy"], ["yes", "no"], splits=("test",))
  report = evaluate_lib.evaluate(model, [only_test], _cfg(split="test"), out_dir=tmp_path)
  best = report["tasks"]["only_test"]["best_template"]
  assert best["selected_on"] == "test" and best["selected_on_report_split"] is True
  markdown = (tmp_path / "report.md").read_text()
  assert "(test ⚠)" in markdown and "rows marked ⚠" in markdown


def test_failure_in_one_task_keeps_the_others(model):
  tasks = _toy_tasks()[:2]

  def broken(split, max_examples):
    raise RuntimeError("disk on fire")

  tasks.append(EvalTask("broken", "sentiment", ("accuracy",), ("test",), broken, VOCAB))
  report = evaluate_lib.evaluate(model, tasks, _cfg(split="test"))
  assert report["errors"] == {"broken": "RuntimeError: disk on fire"}
  assert report["categories"]["sentiment"]["score"] is None
  assert report["tasks"]["yes_no"]["score"] is not None
  assert report["tasks"]["copy_two"]["score"] is not None


def test_bad_input_errors(model):
  with pytest.raises(ValueError, match="task 'nometrics'.*declares no metrics"):
    evaluate_lib.evaluate(model, [_task("nometrics", "sentiment", [], ["yes"])], _cfg())
  with pytest.raises(ValueError, match="task 'bad'.*unknown metric name.*'meteor'"):
    evaluate_lib.evaluate(model, [_task("bad", "sentiment", ["meteor"], ["yes"])], _cfg())
  with pytest.raises(evaluate_lib.NoExamplesError, match="no examples in split 'dev'.*yes_no"):
    evaluate_lib.evaluate(model, _toy_tasks(), _cfg(split="dev"))
  empty = _task("empty", "sentiment", ["accuracy"], ["yes"], num=0)
  with pytest.raises(evaluate_lib.NoExamplesError, match="'empty' has no examples in split"):
    evaluate_lib.evaluate(model, [empty], _cfg(split="test"))
  with pytest.raises(ValueError, match="no tasks"):
    evaluate_lib.evaluate(model, [], _cfg())

  class BigVocabulary(WordVocabulary):
    vocab_size = 32128

  big = [dataclasses.replace(t, vocabulary=BigVocabulary()) for t in _toy_tasks()]
  with pytest.raises(ValueError, match="32128 ids but the model's vocab_size is 32"):
    evaluate_lib.evaluate(model, big, _cfg())
  with pytest.raises(ValueError, match="eval_config needs positive lengths"):
    evaluate_lib.evaluate(model, _toy_tasks(), EvalConfig())
  with pytest.raises(TypeError, match="needs a flanjax.model.hf.T5Model"):
    evaluate_lib.evaluate(model.params, _toy_tasks(), _cfg())


def test_a_category_does_not_recompile_per_batch(model):
  compiles = []

  def listener(event, duration_secs, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  # batch_size 3 is used by no other test, so the warm-up has programs to compile.
  cfg = _cfg(split="test", batch_size=3)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    # Warm up the programs of this category's shapes (2 batches per split and task).
    evaluate_lib.evaluate(model, _toy_tasks()[:2], dataclasses.replace(cfg, max_examples=4))
    assert compiles, "the compile listener saw nothing: the check below would prove nothing"
    compiles.clear()
    # More batches (6 per split) of other examples with the same buckets: nothing to compile.
    more = [
      _task(
        "yes_no",
        "natural_language_inference",
        ["accuracy"],
        ["yes", "no", "maybe"],
        num=12,
        seed=5,
        length=5,
      ),
      _task("copy_two", "summarization", ["rouge"], [], num=12, seed=7, length=7),
    ]
    report = evaluate_lib.evaluate(model, more, cfg)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert report["errors"] == {}
  assert compiles == [], f"{len(compiles)} compilations while evaluating warm shapes"


def test_summary_scalars_and_eval_fn(model, tmp_path):
  eval_fn = evaluate_lib.make_eval_fn(
    model.config,
    _toy_tasks()[:2],
    tmp_path,
    _cfg(max_examples=2),
    heldout_categories=["summarization"],
  )
  scalars = eval_fn(10, model.params)
  assert set(scalars) == {
    "eval/natural_language_inference",
    "eval/summarization",
    "eval/heldout_mean",
    "eval/seen_mean",
  }
  assert scalars["eval/heldout_mean"] == scalars["eval/summarization"]
  report = json.loads((tmp_path / "eval" / "step_10" / "report.json").read_text())
  assert report["step"] == 10 and report["categories"]["summarization"]["heldout"] is True


@pytest.mark.slow
def test_seqio_toy_mixtures_end_to_end(tmp_path):
  import mixtures  # noqa: F401  (registers the toy tasks and mixtures)
  from flanjax.data import DataContext
  from flanjax.data import tasks as data_tasks
  from flanjax.eval import metrics
  from flanjax.eval.tasks import categories_of, registry_eval_tasks

  config = T5Config.tiny(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
  model = T5Model.init(config)
  ctx = DataContext()
  names = ["toy_eval_sentiment", "toy_eval_misc", "toy_eval_sentiment"]
  eval_tasks = registry_eval_tasks(ctx, names)  # the repeated mixture's tasks are kept once
  separately = registry_eval_tasks(ctx, names[:1]) + registry_eval_tasks(ctx, names[1:2])
  assert [t.name for t in eval_tasks] == [t.name for t in separately]
  heldout = scoring.heldout_categories(
    categories_of(ctx, "toy_holdout_sentiment"), [t.category for t in eval_tasks]
  )
  assert heldout == ["sentiment"]
  # The inputs are the rendered prompts tokenised with the task's vocabulary (EOS appended).
  examples = eval_tasks[2].load("test", 2)
  assert len(examples) > 2 and all(e.input_ids[-1] == 1 for e in examples)
  vocabulary = eval_tasks[2].vocabulary
  assert list(examples[0].input_ids[:-1]) == list(vocabulary.encode(examples[0].input_text))
  report = evaluate_lib.evaluate(
    model,
    eval_tasks,
    EvalConfig(split="test", max_examples=3, batch_size=8, input_length=128, target_length=16),
    out_dir=tmp_path,
    heldout_categories=heldout,
    label=",".join(names),
  )
  assert report["mixture"] == "toy_eval_sentiment,toy_eval_misc,toy_eval_sentiment"
  assert report["heldout_categories"] == ["sentiment"]
  assert sorted(report["tasks"]) == sorted(t.name for t in eval_tasks)
  assert report["errors"] == {}
  assert report["categories"]["sentiment"]["heldout"] is True
  assert report["categories"]["misc"]["heldout"] is False
  for name, task in report["tasks"].items():
    info = data_tasks.get_task_info(name)
    assert sorted(task["per_template"], key=int) == [str(t) for t in info.eval_template_ids]
    assert set(task["num_examples"]["test"].values()) == {3}
    assert task["best_template"]["selected_on"] == "validation"
    method = {s["method"] for s in task["samples"]}
    assert method == ({"rank"} if info.has_options else {"decode"})
    # With 3 examples per template the samples are every scored example of the best template.
    expected = metrics.compute_metrics(
      list(task["metrics"]),
      [s["target"] for s in task["samples"]],
      [s["prediction"] for s in task["samples"]],
    )
    assert task["best_template"]["scores"] == pytest.approx(expected)
  assert (tmp_path / "report.png").is_file()


@pytest.mark.slow
def test_flan_mini_nli_without_test_split_is_reported_on_validation(tmp_path):
  import os

  data_dir = os.environ.get("FLANJAX_DATA_DIR")
  if not data_dir or not os.path.isdir(os.path.join(data_dir, "rte")):
    pytest.skip("FLANJAX_DATA_DIR with the real datasets is not set")
  import mixtures  # noqa: F401
  from flanjax.data import DataContext
  from flanjax.eval.tasks import registry_eval_tasks

  config = T5Config.tiny(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
  tasks = registry_eval_tasks(
    DataContext(data_dir=data_dir), ["flan_mini_eval_natural_language_inference"]
  )
  cfg = EvalConfig(split="test", max_examples=2, batch_size=8, input_length=256, target_length=16)
  report = evaluate_lib.evaluate(T5Model.init(config), tasks, cfg)
  assert report["errors"] == {}
  for task in report["tasks"].values():
    assert task["split"] == "validation"
    assert set(task["num_examples"]["validation"].values()) == {2}
  with pytest.raises(evaluate_lib.NoExamplesError, match="no examples in split 'dev'"):
    evaluate_lib.evaluate(T5Model.init(config), tasks, dataclasses.replace(cfg, split="dev"))


def test_docstring_examples():
  result = doctest.testmod(evaluate_lib)
  assert result.attempted >= 1 and result.failed == 0


def test_long_inputs_are_cut_with_their_eos_and_counted(model, tmp_path):
  long_task = _task("copy_long", "summarization", ["rouge"], [], num=3, length=20)
  report = evaluate_lib.evaluate(
    model, [long_task], _cfg(input_length=8), out_dir=tmp_path, heldout_categories=()
  )
  task = report["tasks"]["copy_long"]
  assert task["truncated"] == {"validation": 6, "test": 6}  # 3 examples x 2 templates each
  # The prediction is the model's output on the first 7 tokens + EOS (not the first 8 tokens).
  sample = task["samples"][0]
  ids = VOCAB.encode(sample["input"])[:7] + [1]
  generated = model.generate(np.asarray([ids]), max_new_tokens=8)[0]
  assert sample["prediction"] == VOCAB.decode(evaluate_lib._strip(generated, 1))
  markdown = (tmp_path / "report.md").read_text()
  assert (
    "Truncated inputs (cut to 8 tokens, EOS kept)" in markdown and "`copy_long`: 12" in markdown
  )
