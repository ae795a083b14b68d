"""Runs a model over eval tasks: rank classification or decoding per task, metrics, report.

Example:
  >>> ctx = DataContext(data_dir="../shared/data")                         # doctest: +SKIP
  >>> tasks = registry_eval_tasks(ctx, ["flan_mini_eval_sentiment"])       # doctest: +SKIP
  >>> report = evaluate(hf.load_pretrained("flan-t5-small"), tasks, EvalConfig(max_examples=50),
  ...                   out_dir="workdir/eval/step_1000",
  ...                   heldout_categories=["sentiment"])                  # doctest: +SKIP
  >>> report["categories"]["sentiment"]  # heldout, tasks, metric, score...  # doctest: +SKIP

For every task and template: examples with OPTIONS are scored by rank classification (the option
with the highest log-likelihood is the prediction), the others are decoded greedily (or by beam
search); the task's declared metrics score the predictions per template; `scoring` then picks the
best template on the selection split and reports it on the eval split, takes the mean over
templates and the mean per category. A task that raises is recorded in the report with its error
message and the other tasks still run. With several processes, the one exception is a model call
failing: the processes step through each batch together, so that ends the run (every process,
with the error) rather than leave the others waiting.

Shapes are fixed per task (inputs and options padded to one power-of-two bucket each, every batch
padded to `batch_size` rows), so a task compiles its programs once and later tasks with the same
buckets compile nothing.

Scoring and decoding are sharded like training: parameters over the mesh (`partitioning`'s
rules), every batch a global array with rows over data x fsdp (`batch_size` rounded up to a
multiple of those shards), so N devices each do 1/N of the rows. With several processes every
process loads the same examples (checked per task), feeds the rows of its own devices, and gets
every prediction; the report is the same as one process's.

Tasks are `EvalTask`s (`flanjax/eval/tasks.py`): built by hand (no TensorFlow needed) or from
the registered FLAN tasks of a data context (`registry_eval_tasks`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flanjax import partitioning
from flanjax.config import EvalConfig
from flanjax.eval import compare as compare_lib
from flanjax.eval import inference, scoring
from flanjax.eval import metrics as metrics_lib
from flanjax.eval import rank as rank_lib
from flanjax.eval import report as report_lib
from flanjax.eval.tasks import EvalExample, EvalTask
from flanjax.model.config import T5Config
from flanjax.model.hf import T5Model

log = logging.getLogger(__name__)

NUM_SAMPLES = 3  # predictions kept in report.json per task, to read what the model says
_strip = inference.strip_after_eos  # the old private name, used by tests


class NoExamplesError(ValueError):
  """An eval mixture (or task) has no examples in the requested split."""


def _check_tasks(model: T5Model, tasks: Sequence[EvalTask], label: str) -> None:
  if not isinstance(model, T5Model):
    raise TypeError(f"evaluate needs a flanjax.model.hf.T5Model, got {type(model).__name__}")
  if not tasks:
    raise ValueError(f"eval mixture {label!r} has no tasks")
  for task in tasks:
    vocab_size = getattr(task.vocabulary, "vocab_size", None)
    if vocab_size is not None and int(vocab_size) > model.config.vocab_size:
      raise ValueError(
        f"task {task.name!r}: its vocabulary has {vocab_size} ids but the model's vocab_size is "
        f"{model.config.vocab_size}: evaluate with the model's own vocabulary (config.vocab, or "
        "the --hf_model directory's spiece.model)"
      )
    try:
      metrics_lib.get_metric_fns(list(task.metric_names))
    except ValueError as error:
      raise ValueError(f"task {task.name!r}: {error}") from None
  duplicates = {t.name for t in tasks if [u.name for u in tasks].count(t.name) > 1}
  if duplicates:
    raise ValueError(f"eval mixture {label!r} lists task(s) {sorted(duplicates)} twice")


# ----------------------------------------------------------------------------- model calls
def on_a_mesh(model: T5Model) -> T5Model:
  """`model` placed on a device mesh: its own, else the one its parameters are on (a training
  state's), else one over every device with parameters over fsdp (`MeshConfig()`)."""
  if model.mesh is not None:
    return model
  mesh = partitioning.mesh_of(model.params)
  return model.on_mesh(mesh or partitioning.make_mesh(partitioning.MeshConfig()))


# ----------------------------------------------------------------------------- one task
@dataclasses.dataclass
class _TaskShapes:
  input_length: int
  target_length: int
  num_options: int


def _task_shapes(
  examples: Sequence[EvalExample], option_ids: Mapping[str, Sequence[int]], cfg: EvalConfig
) -> _TaskShapes:
  longest_input = max(len(e.input_ids) for e in examples)
  longest_option = max((len(v) for v in option_ids.values()), default=1)
  return _TaskShapes(
    input_length=rank_lib.bucket_length(longest_input, cfg.input_length),
    target_length=rank_lib.bucket_length(longest_option, cfg.target_length),
    num_options=max((len(e.options) for e in examples), default=0),
  )


def _evaluate_task(
  model: T5Model, task: EvalTask, splits: Sequence[str], cfg: EvalConfig
) -> tuple[dict, dict, dict, dict, float | None]:
  """Returns per_template {tid: {split: metrics}}, samples {tid: [...]} (of the last split),
  example counts {split: {tid: n}}, truncated inputs {split: n} and the chance level of the
  reported split (None where it has none)."""
  vocabulary = task.vocabulary
  eos_id = int(getattr(vocabulary, "eos_id", None) or model.config.eos_token_id)
  by_split, truncated = _load_agreed(task, splits, cfg, eos_id)
  if not by_split[splits[-1]]:
    raise NoExamplesError(f"task {task.name!r} has no examples in split {splits[-1]!r}")
  every = [e for examples in by_split.values() for e in examples]
  option_ids = {
    o: tuple(vocabulary.encode(o)) + (eos_id,)
    for o in sorted({o for e in every for o in e.options})
  }
  shapes = _task_shapes(every, option_ids, cfg)
  # The task's option set, in its own order (first appearance): macro F1 / GLUE F1 need it.
  task_options = list(dict.fromkeys(o for e in every for o in e.options))
  per_template: dict[str, dict[str, dict[str, float]]] = {}
  samples: dict[str, list[dict[str, Any]]] = {}
  counts: dict[str, dict[str, int]] = {}
  for split, examples in by_split.items():
    predictions = _predict(model, examples, option_ids, shapes, cfg, vocabulary, eos_id)
    template_ids = sorted({e.template_id for e in examples})
    for template_id in template_ids:
      rows = [i for i, e in enumerate(examples) if e.template_id == template_id]
      targets = [examples[i].target for i in rows]
      scores = metrics_lib.compute_metrics(
        list(task.metric_names),
        targets,
        [predictions[i] for i in rows],
        options=task_options or None,
      )
      per_template.setdefault(template_id, {})[split] = scores
      samples[template_id] = [
        {
          "input": examples[i].input_text[-500:],
          "target": examples[i].target,
          "prediction": predictions[i],
          "method": "rank" if examples[i].options else "decode",
        }
        for i in rows[:NUM_SAMPLES]
      ]
    counts[split] = {t: sum(e.template_id == t for e in examples) for t in template_ids}
  chance = _chance(by_split[splits[-1]], metrics_lib.primary_key(list(task.metric_names)))
  return per_template, samples, counts, truncated, chance


class _ProcessMustStop(Exception):
  """A model call failed in one process of several: the others may be waiting in that batch's
  collective, so this process ends (its cause is re-raised) rather than going on to the next
  task, and their collectives fail instead of waiting forever."""


def _predict(model, examples, *args) -> list[str]:
  try:
    return inference.predict(model, examples, *args)
  except Exception as error:
    if jax.process_count() == 1:
      raise
    from flanjax.train import distributed

    distributed.exit_without_barrier_at_exit(1)
    raise _ProcessMustStop() from error


def _load_agreed(
  task: EvalTask, splits: Sequence[str], cfg: EvalConfig, eos_id: int
) -> tuple[dict[str, list[EvalExample]], dict[str, int]]:
  """The examples of each split (inputs fitted) and how many were cut; with several processes,
  checked to be the same on every process.

  Every process steps through the same batches of one global array, so a process that loaded
  other examples, or failed to load them, would leave the others waiting in a collective. Each
  process publishes a fingerprint of what it loaded (or its error) and all of them raise the
  same error when one differs or failed.
  """
  max_examples = cfg.max_examples or None
  by_split, truncated = {}, {}
  try:
    for split in splits:
      by_split[split], truncated[split] = _fit_inputs(
        task.load(split, max_examples), cfg.input_length, eos_id
      )
  except Exception as error:
    if jax.process_count() == 1:
      raise
    _agree(task.name, f"error {type(error).__name__}: {error}")
    raise
  _agree(task.name, _fingerprint(by_split))
  return by_split, truncated


def _fingerprint(by_split: Mapping[str, Sequence[EvalExample]]) -> str:
  """A short digest of what was loaded: counts, token ids, targets, options, templates."""
  digest = hashlib.sha256()
  for split, examples in by_split.items():
    digest.update(f"{split}:{len(examples)};".encode())
    for e in examples:
      digest.update(repr((e.input_ids, e.target, e.template_id, e.options)).encode())
  counts = ", ".join(f"{split} {len(examples)}" for split, examples in by_split.items())
  return f"{counts} examples, digest {digest.hexdigest()[:16]}"


def _agree(task_name: str, status: str) -> None:
  """Raises on every process when any process's `status` differs from process 0's (a collective
  call with several processes; nothing with one)."""
  if jax.process_count() == 1:
    return
  from flanjax.train import distributed

  statuses = distributed.gather_json(status)
  differing = [(i, s) for i, s in enumerate(statuses) if s != statuses[0]]
  if differing or statuses[0].startswith("error "):
    process, theirs = differing[0] if differing else (0, statuses[0])
    raise ValueError(
      f"task {task_name!r}: the processes did not load the same eval examples (process 0: "
      f"{statuses[0]}; process {process}: {theirs}); every process must read the same data "
      "(same FLANJAX_DATA_DIR, data files and config)"
    )


def _fit_inputs(
  examples: Sequence[EvalExample], max_length: int, eos_id: int
) -> tuple[list[EvalExample], int]:
  """Inputs longer than `max_length` cut to it with their EOS kept (seqio's
  `append_eos_after_trim`); returns the examples and how many were cut.

  Example:
    >>> fitted, cut = _fit_inputs([EvalExample((5, 6, 7, 1), "t", "0")], 3, eos_id=1)
    >>> fitted[0].input_ids, cut
    ((5, 6, 1), 1)
  """
  out, cut = [], 0
  for example in examples:
    ids, was_cut = inference.fit_ids(example.input_ids, max_length, eos_id)
    if was_cut:
      example = dataclasses.replace(example, input_ids=ids)
      cut += 1
    out.append(example)
  return out, cut


def _chance(examples: Sequence[EvalExample], primary_metric: str) -> float | None:
  """Expected accuracy (0-100) of a uniform guess among each example's options; None when the
  primary metric is not accuracy or the task is not classification."""
  if primary_metric != "accuracy":
    return None
  if not examples or not all(e.options for e in examples):
    return None
  return float(100.0 * np.mean([1.0 / len(e.options) for e in examples]))


SELECTION_SPLIT = "selection"  # flanjax.data.sources.SELECTION_SPLIT (no TF import here)


def _splits_for(
  task: EvalTask, split: str, selection_split: str, test_fallback_split: str | None
) -> list[str] | None:
  """[selection split, report split], or [report split] alone when no clean one exists; None
  when the task cannot be reported on `split`.

  A task without a "test" split (GLUE-style sets have no labelled test) is reported on
  `test_fallback_split` (its dev set, as FLAN does); its template is then chosen on FLAN's
  selection split (the last train rows, removed from training: the data side's "selection"),
  never on the split it is reported on, unless the task has no such split either.
  """
  if split not in task.splits:
    if split != "test" or not test_fallback_split or test_fallback_split not in task.splits:
      return None
    split = test_fallback_split
  for candidate in (selection_split, SELECTION_SPLIT):
    if candidate in task.splits and candidate != split:
      return [candidate, split]
  return [split]


# ----------------------------------------------------------------------------- entry
def evaluate(
  model: T5Model,
  tasks: Sequence[EvalTask],
  eval_config: EvalConfig,
  *,
  out_dir: str | os.PathLike | None = None,
  heldout_categories: Iterable[str] = (),
  step: int | None = None,
  label: str | None = None,
  extra: Mapping[str, Any] | None = None,
  progress: bool = False,
) -> dict[str, Any]:
  """Evaluates `model` on `tasks`; writes report.{json,md,png} to `out_dir` (None: no files).

  Args:
    model: a `flanjax.model.hf.T5Model`. Its batches are split over its `mesh`; without one,
      over the mesh its parameters are already placed on (training's), else over every device
      (`mesh.fsdp=-1`). With several processes, each passes the same model and tasks.
    tasks: `EvalTask`s (by hand, or `registry_eval_tasks(ctx, mixture_names)`).
    eval_config: split reported, selection split, max examples per template and split (0: all),
      batch size, beams, length normalisation, and the input / target lengths (truncation,
      bucket caps, max new tokens; both must be set: `RunConfig.eval_config` fills them).
      With split="test", a task without a test split (GLUE-style sets have no labelled test) is
      reported on `eval_config.test_fallback_split`; its entry's "split" says so.
    heldout_categories: categories the training mixture did not contain (marked in the report).
    step: the training step evaluated (None for an HF model).
    label: the report's "mixture" field (default: the task names joined).
    extra: more fields for report.json (e.g. the checkpoint or HF dir evaluated).
    progress: print one line per task as it finishes (process 0), e.g.
      `eval [3/11] sst2 (sentiment): accuracy 52.30 in 4.1 s`.

  Returns:
    The report dict (also written as report.json).

  Raises:
    ValueError: no tasks, a task without (known) metrics, a vocabulary larger than the model's,
      or no example in the split in any task.
  """
  cfg = eval_config
  if cfg.input_length <= 0 or cfg.target_length <= 0:
    raise ValueError(
      f"evaluate: eval_config needs positive lengths, got inputs={cfg.input_length} "
      f"targets={cfg.target_length} (RunConfig.eval_config fills them from config.lengths)"
    )
  label = label or ",".join(t.name for t in tasks)
  _check_tasks(model, tasks, label)
  model = on_a_mesh(model)
  plans = {
    t.name: _splits_for(t, cfg.split, cfg.selection_split, cfg.test_fallback_split or None)
    for t in tasks
  }
  if not any(plans.values()):
    available = {t.name: list(t.splits) for t in tasks}
    raise NoExamplesError(
      f"eval mixture {label!r} has no examples in split {cfg.split!r}; splits per task: {available}"
    )

  summaries = []
  start_time = time.time()
  for task in tasks:
    task_start = time.time()
    splits = plans[task.name]
    try:
      if splits is None:
        raise NoExamplesError(
          f"task {task.name!r} has no split {cfg.split!r}; it has {list(task.splits)}"
        )
      per_template, samples, counts, truncated, chance = _evaluate_task(model, task, splits, cfg)
      summary = scoring.summarize_task(
        task.name,
        category=task.category,
        metric_names=task.metric_names,
        per_template=per_template,
        report_split=splits[-1],
        selection_split=splits[0],
      )
      summary["num_examples"] = counts
      summary["truncated"] = truncated  # {split: inputs cut to eval_config.input_length}
      summary["samples"] = samples[summary["best_template"]["template_id"]]
      summary["chance"] = chance
    except _ProcessMustStop as stop:
      raise stop.__cause__ from None
    except Exception as error:  # one task's failure must not lose the others' results
      log.error("evaluation of task %s failed:\n%s", task.name, traceback.format_exc())
      summary = scoring.failed_task(
        task.name,
        category=task.category,
        metric_names=task.metric_names,
        error=f"{type(error).__name__}: {error}",
        report_split=cfg.split,
      )
    summary["seconds"] = round(time.time() - task_start, 3)
    summaries.append(summary)
    log.info(
      "eval %s: %s (%.1fs)",
      task.name,
      summary["score"] if summary["error"] is None else summary["error"],
      summary["seconds"],
    )
    if progress and jax.process_index() == 0:
      outcome = (
        f"{summary['primary_metric']} {summary['score']:.2f}"
        if summary["error"] is None
        else f"failed: {summary['error']}"
      )
      print(
        f"eval [{len(summaries)}/{len(tasks)}] {task.name} ({task.category}): {outcome} "
        f"in {summary['seconds']:.1f} s",
        flush=True,
      )

  if all(
    isinstance(s["error"], str) and s["error"].startswith("NoExamplesError") for s in summaries
  ):
    raise NoExamplesError(
      f"eval mixture {label!r} has no examples in split {cfg.split!r}: "
      + "; ".join(s["error"] for s in summaries)
    )
  report = report_lib.build_report(
    summaries,
    split=cfg.split,
    heldout_categories=sorted(set(heldout_categories)),
    step=step,
    selection_split=cfg.selection_split,
    extra={
      "mixture": label,
      "max_examples": cfg.max_examples or None,
      "input_length": cfg.input_length,
      "target_length": cfg.target_length,
      "seconds": round(time.time() - start_time, 3),
      **dict(extra or {}),
    },
  )
  benchmarks = compare_lib.benchmark_summary(report)  # MMLU / BBH / MGSM headline numbers
  if benchmarks:
    report["benchmarks"] = benchmarks
  if out_dir is not None and jax.process_index() == 0:  # every process computed the same report
    report_lib.write_report(report, out_dir)
  return report


def make_eval_fn(
  model_config: T5Config,
  tasks: Sequence[EvalTask],
  workdir: str | os.PathLike,
  eval_config: EvalConfig,
  *,
  heldout_categories: Iterable[str] = (),
  label: str | None = None,
) -> Callable[[int, Any], dict[str, float]]:
  """The training loop's `eval_fn(step, params) -> {name: value}`, writing
  `workdir/eval/step_<N>/report.{json,md,png}`.

  Returned values: `eval/<category>` per category, `eval/heldout_mean` and `eval/seen_mean`.
  Tasks are resolved by the caller before training starts, so a bad eval mixture fails early.

  Example:
    >>> eval_fn = make_eval_fn(rc.model, registry_eval_tasks(ctx, rc.data.eval_mixtures),
    ...                        workdir, rc.eval_config)                     # doctest: +SKIP
    >>> eval_fn(1000, state.params)["eval/heldout_mean"]                    # doctest: +SKIP
  """
  heldout = tuple(heldout_categories)

  def eval_fn(step: int, params) -> dict[str, float]:
    out_dir = pathlib.Path(workdir) / "eval" / f"step_{int(step)}"
    report = evaluate(
      T5Model(model_config, params),
      tasks,
      eval_config,
      out_dir=out_dir,
      heldout_categories=heldout,
      step=int(step),
      label=label,
    )
    return summary_scalars(report)

  return eval_fn


def summary_scalars(report: Mapping[str, Any]) -> dict[str, float]:
  """Flat numbers for logs: per category, mean over held-out and over seen categories.

  Example:
    >>> summary_scalars({"categories": {"nli": {"score": 60.0, "heldout": True},
    ...                                 "sentiment": {"score": 80.0, "heldout": False}}})
    {'eval/nli': 60.0, 'eval/sentiment': 80.0, 'eval/heldout_mean': 60.0, 'eval/seen_mean': 80.0}
  """
  out = {
    f"eval/{name}": float(c["score"])
    for name, c in report["categories"].items()
    if c["score"] is not None
  }
  for flag, key in ((True, "eval/heldout_mean"), (False, "eval/seen_mean")):
    scores = [
      c["score"]
      for c in report["categories"].values()
      if c["heldout"] is flag and c["score"] is not None
    ]
    if scores:
      out[key] = float(np.mean(scores))
  return out
