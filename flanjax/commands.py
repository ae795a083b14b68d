"""What each `tools/launch.py` subcommand does, once flags and config are parsed (see cli.py).

The one place where the config meets the data pipeline, the training loop and the evaluator.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from typing import Any

import ml_collections

from flanjax import cli


def _setup_data(config: ml_collections.ConfigDict | None) -> None:
  """Points the data layer at the data dir and vocabulary, then registers every task."""
  from flanjax.data import sources, vocab

  if config is not None:
    if config.get("data_dir"):
      sources.set_data_dir(config.data_dir)
      os.environ[sources.DATA_DIR_ENV] = config.data_dir
    vocab_path = config.get("vocab") or ""
    init_from = config.get("init_from") or ""
    if not vocab_path and init_from:
      vocab_path = _pretrained_vocab(init_from)  # a pretrained model brings its own vocabulary
    if vocab_path:
      os.environ[vocab.VOCAB_ENV] = vocab_path
  import mixtures  # noqa: F401 — registers every shipped task and mixture


def _pretrained_vocab(init_from: str) -> str:
  """`spiece.model` of an HF directory, or fetched from the hub for a hub name."""
  if os.path.isdir(init_from):
    path = os.path.join(init_from, "spiece.model")
    return path if os.path.isfile(path) else ""
  try:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(init_from, "spiece.model")
  except Exception as e:  # noqa: BLE001 — offline, unknown repo, ...
    raise cli.UsageError(
      f"config.init_from={init_from!r}: could not fetch its spiece.model from the Hugging Face "
      f"hub ({type(e).__name__}); download the model and pass its directory as "
      "--config.init_from (or set --config.vocab)"
    ) from e


def _vocabulary_of(name: str):
  from flanjax.eval import evaluate

  return evaluate.seqio_vocabulary(name)


def _check_vocab_fits(config: ml_collections.ConfigDict, mixture: str) -> None:
  size = _vocabulary_of(mixture).vocab_size
  if size > config.model.vocab_size:
    raise cli.UsageError(
      f"mixture {mixture!r} uses a vocabulary of {size} ids but config.model.vocab_size="
      f"{config.model.vocab_size}; raise --config.model.vocab_size (T5 pads to a multiple of "
      "128)"
    )


def _eval_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  e = config.eval
  return dict(
    split=e.split,
    selection_split=e.selection_split,
    max_examples=e.max_examples or None,
    batch_size=e.batch_size,
    num_beams=e.num_beams,
    length_normalize=e.length_normalize,
    lengths=(config.lengths.inputs, config.lengths.targets),
    train_mixture=config.mixture,
  )


def _eval_names(config: ml_collections.ConfigDict) -> list[str]:
  names = config.eval_mixtures
  return [names] if isinstance(names, str) else list(names)


def train(args, config: ml_collections.ConfigDict) -> int:
  from flanjax.data import pipeline
  from flanjax.eval import evaluate
  from flanjax.train import distributed, loop
  from flanjax.train.config import TrainConfig

  process_index, process_count = distributed.initialize_from_env()
  train_config = TrainConfig.from_config(config)  # validates before any data or compile work
  _setup_data(config)
  _check_vocab_fits(config, config.mixture)  # an unknown mixture fails here, before the workdir
  if process_index == 0:
    cli.prepare_workdir(args.workdir, config, overwrite=args.overwrite)
  batch_iter = pipeline.make_batch_iterator(
    config.mixture,
    "train",
    lengths={"inputs": config.lengths.inputs, "targets": config.lengths.targets},
    batch_size=config.train.batch_size // process_count,
    seed=config.seed,
    pack=config.train.pack,
    shard_index=process_index,
    num_shards=process_count,
  )
  eval_fn = None
  if config.train.eval_every:
    eval_fn = evaluate.make_eval_fn(
      train_config.model, _eval_names(config), args.workdir, **_eval_kwargs(config)
    )
  result = loop.train(config, args.workdir, batch_iter, eval_fn=eval_fn)
  if process_index == 0:
    loss = result.get("loss")
    done = f"loss {loss:.4f}" if loss is not None else "the checkpoint was already there"
    print(f"trained to step {result.get('step')}; {done}; workdir {args.workdir}")
  return 0


def restore_model(config: ml_collections.ConfigDict, workdir: str, step: int | None):
  """(T5Model, step) from `workdir/checkpoints`; a missing step lists the ones that exist."""
  import jax
  import numpy as np

  from flanjax import partitioning
  from flanjax.model import hf, t5
  from flanjax.train.checkpoint import Checkpointer
  from flanjax.train.config import TrainConfig
  from flanjax.train.optim import make_optimizer
  from flanjax.train.state import abstract_train_state, abstract_with_shardings

  tc = TrainConfig.from_config(config)
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise cli.UsageError(f"{directory} does not exist: train first, or pass --hf_model DIR")
  checkpointer = Checkpointer(directory, keep=max(tc.keep_checkpoints, 1), async_save=False)
  steps = checkpointer.all_steps()
  if not steps:
    raise cli.UsageError(f"{directory} holds no finished checkpoint")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise cli.UsageError(f"--checkpoint {step} does not exist in {directory}; steps: {steps}")
  tc.validate(jax.device_count(), jax.process_count())
  mesh = partitioning.make_mesh(tc.mesh)
  abstract, shardings = abstract_train_state(
    init_fn=lambda rng: t5.init_params(tc.model, rng),
    logical_specs=t5.param_logical_axes(tc.model),
    optimizer=make_optimizer(tc.optimizer, tc.steps),
    mesh=mesh,
  )
  with jax.set_mesh(mesh):
    state = checkpointer.restore_state(step, abstract_with_shardings(abstract, shardings))
  params = jax.tree.map(np.asarray, jax.device_get(state.params))
  checkpointer.close()
  return hf.T5Model(tc.model, params), step


def evaluate_command(args, config: ml_collections.ConfigDict) -> int:
  from flanjax.eval import evaluate, report
  from flanjax.model import hf

  if args.hf_model:
    # The model's own vocabulary: the tasks must be tokenised with it (set before registering).
    config.vocab = config.vocab or _pretrained_vocab(args.hf_model)
  _setup_data(config)
  if args.hf_model:
    model = hf.load_pretrained(args.hf_model)
    step = None
    out_dir = pathlib.Path(args.workdir) / "eval" / f"hf_{pathlib.Path(args.hf_model).name}"
  else:
    model, step = restore_model(config, args.workdir, args.checkpoint)
    out_dir = pathlib.Path(args.workdir) / "eval" / f"step_{step}"
  results = evaluate.evaluate(
    model, _eval_names(config), out_dir=out_dir, step=step, **_eval_kwargs(config)
  )
  print(report.render_markdown(results))
  print(f"report: {out_dir}/report.md (also report.json, report.png)")
  return 0


def export(args, config: ml_collections.ConfigDict) -> int:
  from flanjax.data import vocab
  from flanjax.model import hf

  if not args.out:
    raise cli.UsageError("export needs --out DIR (the HF directory to write)")
  model, step = restore_model(config, args.workdir, args.checkpoint)
  vocab_source = None
  vocab_path = config.get("vocab") or config.get("init_from") or ""
  if vocab_path:
    resolved = vocab.resolve_vocab_path(vocab_path)
    vocab_source = os.path.dirname(resolved) if resolved else None
  hf.save_pretrained(model, args.out, tokenizer_dir=vocab_source)
  if vocab_path and os.path.isfile(vocab_path):  # a bare .model file: ship it as spiece.model
    import shutil

    shutil.copy(vocab_path, os.path.join(args.out, "spiece.model"))
  print(f"exported step {step} to {args.out}")
  return 0


def tasks(args, config) -> int:
  from flanjax.data import cli as data_cli

  _setup_data(config)
  data_cli.list_tasks(out=sys.stdout)
  return 0


def show(args, config) -> int:
  from flanjax.data import cli as data_cli

  if not args.task:
    raise cli.UsageError("show needs --task NAME (see `tools/launch.py tasks`)")
  _setup_data(config)
  data_cli.show_task(args.task, n=args.num_examples, split=args.split, out=sys.stdout)
  return 0


def vocab_command(args, config) -> int:
  from flanjax.data import cli as data_cli

  if not (args.mixture and args.out):
    raise cli.UsageError("vocab needs --mixture NAME --size N --out PATH")
  _setup_data(config)
  path = data_cli.train_vocab(args.mixture, args.size, args.out)
  print(f"wrote {path}")
  return 0


def demo(args, config: ml_collections.ConfigDict) -> int:
  """`make demo`: train the demo config (resuming if it already ran), evaluate, print the table."""
  start = time.time()
  args.overwrite = args.overwrite or _demo_workdir_is_stale(args.workdir, config)
  train(args, config)
  args.checkpoint = None
  args.hf_model = None
  evaluate_command(args, config)
  print(f"demo finished in {time.time() - start:.0f} s")
  return 0


def _demo_workdir_is_stale(workdir: str, config) -> bool:
  """A demo workdir from an older demo config is replaced (moved aside) instead of refused."""
  return bool(cli.config_differences(workdir, config))


def run(args, config) -> int:
  handlers = {
    "train": train,
    "eval": evaluate_command,
    "export": export,
    "tasks": tasks,
    "show": show,
    "vocab": vocab_command,
    "demo": demo,
  }
  try:
    return handlers[args.command](args, config)
  except cli.UsageError:
    raise
  except (ValueError, KeyError, FileNotFoundError) as e:
    if os.environ.get("FLANJAX_DEBUG"):
      raise
    print(f"error: {e}", file=sys.stderr)
    print("(set FLANJAX_DEBUG=1 for the full traceback)", file=sys.stderr)
    return 2
