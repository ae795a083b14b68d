"""What each `tools/launch.py` subcommand does, given its flags and the typed `RunConfig`.

cli.py parses flags and reads the config file into a `RunConfig` (flanjax/config.py, the only
config reader); every function here takes that RunConfig and calls the library downward: the
data context (flanjax/data), the training loop, the evaluator. Nothing here reads a ConfigDict
or writes environment variables.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

from flanjax import workdir as workdir_lib
from flanjax.config import RunConfig, resolve_data_dir
from flanjax.errors import UsageError


# ---------------------------------------------------------------------- data context
def pretrained_vocab(init_from: str) -> str:
  """`spiece.model` of an HF directory, or fetched from the hub for a hub name ("" if none)."""
  if not init_from:
    return ""
  if os.path.isdir(init_from):
    path = os.path.join(init_from, "spiece.model")
    return path if os.path.isfile(path) else ""
  try:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(init_from, "spiece.model")
  except Exception as e:  # noqa: BLE001 — offline, unknown repo, ...
    raise UsageError(
      f"config.init_from={init_from!r}: could not fetch its spiece.model from the Hugging Face "
      f"hub ({type(e).__name__}); download the model and pass its directory as "
      "--config.init_from (or set --config.vocab)"
    ) from e


def import_user_modules(names: list[str] | None) -> None:
  """Imports `--import` modules (a module name, found from the current directory too, or a path
  to a .py file) so that the tasks and mixtures they register exist; errors name the module."""
  import importlib
  import importlib.util

  for name in names or ():
    try:
      if name.endswith(".py") or os.sep in name:
        if not os.path.isfile(name):
          raise FileNotFoundError(f"no such file {name}")
        module_name = f"flanjax_user_{pathlib.Path(name).stem}"
        if module_name in sys.modules:
          continue
        spec = importlib.util.spec_from_file_location(module_name, name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
      else:
        if os.getcwd() not in sys.path:
          sys.path.insert(0, os.getcwd())
        importlib.import_module(name)
    except (ImportError, FileNotFoundError, SyntaxError) as error:
      raise UsageError(f"--import {name}: {type(error).__name__}: {error}") from None


def data_context(rc: RunConfig, *, model_dir: str | None = None, imports=None):
  """The run's DataContext: data dir (config, else env), and the vocabulary.

  The vocabulary is `config.vocab`, else the SentencePiece of the model evaluated (`model_dir`,
  an `--hf_model` directory) or started from (`config.init_from`), else bytes.
  """
  import mixtures  # noqa: F401 — registers every shipped task and mixture (reads no file)
  from flanjax.data.context import DataContext

  import_user_modules(imports)

  vocab = rc.data.vocab or pretrained_vocab(model_dir or rc.init_from)
  return DataContext(
    data_dir=resolve_data_dir(rc) or None,
    vocab=vocab or None,
    toy_vocab=rc.data.toy_vocab,
    benchmark_dir=rc.data.benchmark_dir or None,
  )


def _warn_tasks_without_train_split(ctx, rc: RunConfig) -> None:
  for name in ctx.task_names(rc.data.mixture):
    if "train" not in ctx.get(name).splits:
      print(
        f"warning: task {name} has no train split: it contributes no rows to mixture "
        f"{rc.data.mixture}",
        flush=True,
      )


def _report_truncation(batch_iter, rc: RunConfig) -> None:
  """One line per task whose examples exceed lengths.* (cut there, EOS kept)."""
  for name, counts in batch_iter.truncation().items():
    print(
      f"truncation: {name}: {counts['inputs']} of {counts['examples']} inputs longer than "
      f"lengths.inputs={rc.data.input_length}, {counts['targets']} targets longer than "
      f"lengths.targets={rc.data.target_length} (cut, EOS kept)",
      flush=True,
    )


def _check_not_a_benchmark(ctx, rc: RunConfig) -> None:
  """The held-out benchmarks (MMLU, BBH, MGSM) are for evaluation only: never train on them."""
  from flanjax.data import benchmarks

  try:
    benchmarks.check_not_training(ctx, rc.data.mixture)
  except ValueError as error:
    raise UsageError(f"config.mixture: {error}") from None


def _check_vocab_fits(ctx, rc: RunConfig) -> None:
  size = ctx.vocabulary_of(rc.data.mixture).vocab_size
  if size > rc.model.vocab_size:
    raise UsageError(
      f"mixture {rc.data.mixture!r} uses a vocabulary of {size} ids but config.model.vocab_size="
      f"{rc.model.vocab_size}; raise --config.model.vocab_size (T5 pads to a multiple of 128)"
    )


def _heldout_categories(ctx, rc: RunConfig, eval_tasks) -> list[str]:
  from flanjax.eval import scoring
  from flanjax.eval.tasks import categories_of

  return scoring.heldout_categories(
    categories_of(ctx, rc.data.mixture), [t.category for t in eval_tasks]
  )


def _eval_tasks(ctx, rc: RunConfig):
  from flanjax.eval.tasks import registry_eval_tasks

  try:
    return registry_eval_tasks(ctx, rc.data.eval_mixtures)
  except ValueError as error:
    raise UsageError(f"config.eval_mixtures: {error}") from None


# ---------------------------------------------------------------------- train
def train(args, rc: RunConfig) -> int:
  import jax

  from flanjax.data import pipeline
  from flanjax.eval import evaluate
  from flanjax.train import distributed, loop

  process_index, process_count = distributed.initialize_from_env()
  rc.validate(jax.device_count(), process_count)  # every check before the workdir is recorded
  ctx = data_context(rc, imports=args.imports)
  _check_vocab_fits(ctx, rc)  # an unknown mixture fails here, before the workdir
  _check_not_a_benchmark(ctx, rc)
  if process_index == 0:
    _warn_tasks_without_train_split(ctx, rc)
  eval_fn = None
  if rc.train.eval_every:
    eval_tasks = _eval_tasks(ctx, rc)  # a typo in eval_mixtures fails now, not at the first eval
    eval_fn = evaluate.make_eval_fn(
      rc.model,
      eval_tasks,
      args.workdir,
      rc.eval_config,
      heldout_categories=_heldout_categories(ctx, rc, eval_tasks),
      label=",".join(rc.data.eval_mixtures),
    )
  lock = workdir_lib.WorkdirLock(args.workdir)
  if process_index == 0:
    lock.acquire()  # a second run on this workdir is refused here, naming the holder
  try:
    if process_index == 0:
      workdir_lib.prepare_workdir(args.workdir, rc, overwrite=args.overwrite)
      print(f"loading data: mixture {rc.data.mixture} (rendering and tokenising)", flush=True)
    batch_iter = pipeline.make_batch_iterator(
      ctx,
      rc.data.mixture,
      "train",
      lengths={"inputs": rc.data.input_length, "targets": rc.data.target_length},
      batch_size=rc.train.batch_size // process_count,
      seed=rc.seed,
      pack=rc.data.pack,
      shard_index=process_index,
      num_shards=process_count,
    )
    if process_index == 0:
      _report_truncation(batch_iter, rc)
    result = loop.train(rc, args.workdir, batch_iter, eval_fn=eval_fn)
    if process_index == 0:
      if result.get("preempted"):
        print(
          f"stopped by {result.get('signal') or 'a preemption'} at step {result.get('step')}; "
          f"checkpoint saved in {args.workdir}/checkpoints; run the same command to resume"
        )
      else:
        loss = result.get("loss")
        done = f"loss {loss:.4f}" if loss is not None else "the checkpoint was already there"
        print(f"trained to step {result.get('step')}; {done}; workdir {args.workdir}")
  finally:
    lock.release()
  return 130 if result.get("signal") == "SIGINT" else 0


# ---------------------------------------------------------------------- eval / export
def load_model(rc: RunConfig, workdir: str, step: int | None, *, on_host: bool = False):
  """(T5Model, step) from `workdir/checkpoints` through the one restore path: on the run's mesh
  (`rc.mesh`, parameters sharded as training placed them), or with `on_host` as numpy."""
  from flanjax import partitioning
  from flanjax.model import hf
  from flanjax.train.state import restore_params

  _check_recorded_config(workdir, rc)
  try:
    params, step = restore_params(workdir, step, rc, on_host=on_host)
  except (FileNotFoundError, ValueError) as error:
    raise UsageError(str(error)) from None
  return hf.T5Model(rc.model, params, mesh=partitioning.mesh_of(params)), step  # None on host


def _describe_mesh(mesh) -> str:
  """'4 devices of 2 processes, mesh data=1 fsdp=4 model=1'."""
  sizes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
  devices = mesh.devices.size
  processes = len({device.process_index for device in mesh.devices.flat})
  return (
    f"{devices} device{'s' * (devices > 1)} of {processes} process{'es' * (processes > 1)}, "
    f"mesh {sizes}"
  )


def load_hf_model(rc: RunConfig, directory: str):
  """An HF checkpoint as a T5Model on the run's mesh (`rc.mesh`), each process reading only the
  slices of its own devices."""
  from flanjax import partitioning
  from flanjax.model import hf

  try:
    mesh = partitioning.make_mesh(rc.mesh)
  except ValueError as error:
    raise UsageError(str(error)) from None
  return hf.load_pretrained(directory, mesh=mesh)


def _check_recorded_config(workdir: str, rc: RunConfig) -> None:
  """eval/export/predict on a workdir: the model, vocabulary and training mixture must be the
  ones it was trained with (training-only keys such as the batch size may differ)."""
  changes = workdir_lib.config_changes(workdir, rc, only=workdir_lib.CHECKPOINT_KEYS)
  if changes:
    raise UsageError(
      f"workdir {workdir} was trained with a different config "
      f"({workdir_lib.describe_changes(changes)}); pass the config it was trained with"
    )


def evaluate_command(args, rc: RunConfig) -> int:
  import jax

  from flanjax.eval import evaluate, report
  from flanjax.train import distributed

  # Several processes (--launcher multiprocess / slurm / tpu-vm): each scores 1/N of the rows.
  distributed.initialize_from_env()

  ctx = data_context(rc, model_dir=args.hf_model, imports=args.imports)
  eval_tasks = _eval_tasks(ctx, rc)
  if jax.process_index() == 0:
    print(f"evaluating {len(eval_tasks)} task(s) of {', '.join(rc.data.eval_mixtures)}")
  if args.hf_model:
    model = load_hf_model(rc, args.hf_model)
    step = None
    out_dir = pathlib.Path(args.workdir) / "eval" / f"hf_{pathlib.Path(args.hf_model).name}"
  else:
    model, step = load_model(rc, args.workdir, args.checkpoint)
    out_dir = pathlib.Path(args.workdir) / "eval" / f"step_{step}"
  if jax.process_index() == 0:
    print(f"eval batches split over {_describe_mesh(model.mesh)}")
  results = evaluate.evaluate(
    model,
    eval_tasks,
    rc.eval_config,
    out_dir=out_dir,
    step=step,
    heldout_categories=_heldout_categories(ctx, rc, eval_tasks),
    label=",".join(rc.data.eval_mixtures),
    progress=True,
  )
  if jax.process_index() == 0:
    print(report.render_markdown(results))
    print(f"report: {out_dir}/report.md (also report.json, report.png)")
  return 0


def export(args, rc: RunConfig) -> int:
  """Writes the checkpoint as an HF directory: config.json, model.safetensors and the tokenizer
  of the vocabulary the run was trained with (so transformers' tokenizer + model reproduce
  flanjax's predictions)."""
  from flanjax.data.hf_tokenizer import write_hf_tokenizer
  from flanjax.model import hf

  if not args.out:
    raise UsageError("export needs --out DIR (the HF directory to write)")
  _check_export_dir(pathlib.Path(args.out), pathlib.Path(args.workdir), args.overwrite)
  model, step = load_model(rc, args.workdir, args.checkpoint, on_host=True)
  out = pathlib.Path(args.out)
  if out.is_dir() and any(out.iterdir()):
    print(f"moved the previous export to {workdir_lib.move_aside(out)}")
  vocabulary = data_context(rc, imports=args.imports).vocabulary_of(rc.data.mixture)
  hf.save_pretrained(model, args.out)
  tokenizer = write_hf_tokenizer(vocabulary, args.out)
  print(f"exported step {step} to {args.out} (tokenizer: {tokenizer})")
  return 0


MANAGED = ("checkpoints", "eval", "tensorboard", "metrics.jsonl", workdir_lib.CONFIG_FILE)


def _check_export_dir(out: pathlib.Path, workdir: pathlib.Path, overwrite: bool) -> None:
  """--out must not be the workdir, a run's managed files, or a non-empty dir (unless
  --overwrite, which moves the old contents aside)."""
  out_abs, work_abs = out.resolve(), workdir.resolve()
  managed = [work_abs / name for name in MANAGED]
  if out_abs == work_abs or any(out_abs == m or m in out_abs.parents for m in managed):
    raise UsageError(
      f"--out {out} is the workdir or inside its managed files ({', '.join(MANAGED)}); "
      f"export elsewhere, e.g. --out {workdir}/hf_export"
    )
  if (out / workdir_lib.CONFIG_FILE).exists() and (out / "checkpoints").is_dir():
    raise UsageError(f"--out {out} is a flanjax workdir (it has checkpoints/): export elsewhere")
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise UsageError(
      f"--out {out} is not empty; pass --overwrite (its contents are moved aside, never "
      "deleted) or choose another directory"
    )


def predict_command(args, rc: RunConfig) -> int:
  """Predictions for a file of prompts, from a checkpoint (`--workdir`) or an HF directory."""
  from flanjax import predict

  if bool(args.hf_model) == bool(args.workdir):
    raise UsageError("predict needs exactly one of --workdir DIR or --hf_model DIR")
  if not (args.input and args.output):
    raise UsageError("predict needs --input prompts.{jsonl,txt} --output preds.jsonl")
  try:
    rows = predict.read_prompts(args.input)  # a bad line fails here, before any model work
  except (FileNotFoundError, ValueError) as error:
    raise UsageError(str(error)) from None
  output = pathlib.Path(args.output)
  if output.exists() and output.stat().st_size and not args.overwrite:
    raise UsageError(f"--output {output} exists; pass --overwrite (it is moved aside) or another")
  if output.exists() and output.stat().st_size:
    print(f"moved the previous predictions to {workdir_lib.move_aside(output)}")
  if args.hf_model:
    model = load_hf_model(rc, args.hf_model)
    vocabulary = data_context(rc, model_dir=args.hf_model, imports=args.imports).vocabulary()
    source = args.hf_model
  else:
    model, step = load_model(rc, args.workdir, args.checkpoint)
    vocabulary = data_context(rc, imports=args.imports).vocabulary_of(rc.data.mixture)
    source = f"{args.workdir} step {step}"
  eval_config = rc.eval_config
  options = predict.PredictOptions(
    batch_size=eval_config.batch_size,
    max_input_length=eval_config.input_length,
    max_new_tokens=args.max_new_tokens or eval_config.target_length,
    num_beams=args.num_beams or eval_config.num_beams,
    temperature=args.temperature,
    top_k=args.top_k,
    seed=rc.seed,
  )
  truncated = predict.predict_rows(model, vocabulary, rows, output, options)
  note = f"; {truncated} prompt(s) cut to {options.max_input_length} tokens" if truncated else ""
  print(f"wrote {len(rows)} predictions of {source} to {output}{note}")
  return 0


def plan_command(args, rc: RunConfig) -> int:
  """Compiles the run's train / score / decode steps for a topology; exit 0 only if all fit."""
  from flanjax import plan

  return plan.plan_command(rc, args.topology, as_json=args.as_json)


def compare_command(args, rc: RunConfig) -> int:
  """Reports of several models or steps side by side: compare.md and compare.png."""
  from flanjax.eval import compare

  if not args.out:
    raise UsageError("compare needs REPORT_OR_EVAL_DIR ... --out DIR")
  try:
    result = compare.compare(args.reports, args.out)
  except (FileNotFoundError, ValueError) as error:
    raise UsageError(str(error)) from None
  print(pathlib.Path(result["files"]["md"]).read_text())
  return 0


# ---------------------------------------------------------------------- data inspection
def tasks(args, rc: RunConfig) -> int:
  from flanjax.data import inspect

  inspect.list_tasks(data_context(rc, imports=args.imports), out=sys.stdout)
  return 0


def show(args, rc: RunConfig) -> int:
  from flanjax.data import inspect

  if not args.task:
    raise UsageError("show needs --task NAME (see `tools/launch.py tasks`)")
  inspect.show_task(
    data_context(rc, imports=args.imports), args.task, n=args.num_examples, split=args.split
  )
  return 0


def vocab_command(args, rc: RunConfig) -> int:
  from flanjax.data import inspect

  if not (args.mixture and args.out):
    raise UsageError("vocab needs --mixture NAME --size N --out PATH")
  path = inspect.train_vocab(
    data_context(rc, imports=args.imports), args.mixture, args.size, args.out
  )
  print(f"wrote {path}")
  return 0


# ---------------------------------------------------------------------- demo
def demo(args, rc: RunConfig) -> int:
  """`make demo`: train the demo config (resuming if it already ran), evaluate, print the table."""
  start = time.time()
  # A demo workdir from an older demo config is replaced (moved aside) instead of refused.
  args.overwrite = args.overwrite or bool(workdir_lib.config_differences(args.workdir, rc))
  code = train(args, rc)
  if code:
    return code  # interrupted: the checkpoint is saved; `make demo` again resumes
  args.checkpoint = None
  args.hf_model = None
  evaluate_command(args, rc)
  print(f"demo finished in {time.time() - start:.0f} s")
  return 0


HANDLERS = {
  "train": train,
  "eval": evaluate_command,
  "export": export,
  "predict": predict_command,
  "plan": plan_command,
  "compare": compare_command,
  "tasks": tasks,
  "show": show,
  "vocab": vocab_command,
  "demo": demo,
}


def _run_errors() -> tuple[type[BaseException], ...]:
  """Errors that end a run with their message alone (exit 1): the message is the whole story."""
  from flanjax.train import checkpoint, loop, state

  return (
    loop.NonFiniteLossError,
    checkpoint.CorruptCheckpointError,
    checkpoint.CheckpointDirectoryError,
    state.CheckpointMismatchError,
  )


def run(args, rc: RunConfig) -> int:
  try:
    return HANDLERS[args.command](args, rc)
  except UsageError:
    raise
  except KeyboardInterrupt as e:
    print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
    return 130
  except _run_errors() as e:
    if os.environ.get("FLANJAX_DEBUG"):
      raise
    print(f"error: {e}", file=sys.stderr)
    return 1
  except (ValueError, KeyError, FileNotFoundError) as e:
    if os.environ.get("FLANJAX_DEBUG"):
      raise
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {message}", file=sys.stderr)
    print("(set FLANJAX_DEBUG=1 for the full traceback)", file=sys.stderr)
    return 2
