"""`tools/launch.py`: flags → config → library calls. Only this module and the loop read the config.

Config files are ml_collections Python files with `get_config()`; `--config.a.b=value` overrides
any key (same syntax as ml_collections' config_flags; parsed here so that an unknown key gets a
"did you mean" answer and a wrongly typed value names the key and its type).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import json
import os
import pathlib
import shlex
import shutil
import sys
import time
from typing import Any

import ml_collections

from flanjax import launchers

COMMANDS = ("train", "eval", "export", "tasks", "show", "vocab", "demo")
DEMO_CONFIG = "configs/demo.py"
# Keys a resumed or extended run may change without being "a different config".
RESUMABLE_KEYS = (
  "train.steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.eval_every",
  "train.keep_checkpoints",
  "eval_mixtures",
  "eval",
  "data_dir",
  "mesh",
)


class UsageError(ValueError):
  """Bad command line or config; printed as one line, exit code 2."""


# ------------------------------------------------------------------ parsing
def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="tools/launch.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("command", help=f"one of {', '.join(COMMANDS)}")
  p.add_argument("--config", help="an ml_collections config file, e.g. configs/demo.py")
  p.add_argument("--workdir", help="run directory: checkpoints/, metrics.jsonl, eval/, ...")
  p.add_argument("--launcher", default="local", help=f"one of {', '.join(launchers.LAUNCHERS)}")
  p.add_argument("--num_processes", type=int, default=2, help="multiprocess: local processes")
  p.add_argument("--dry_run", action="store_true", help="slurm / tpu-vm: print, do not run")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="train: start afresh in a workdir made by another config (the old one is "
    "moved aside, never deleted)",
  )
  p.add_argument("--checkpoint", type=int, default=None, help="eval/export: step (default latest)")
  p.add_argument("--hf_model", default=None, help="eval: an HF T5 directory or hub name")
  p.add_argument("--out", default=None, help="export: output dir; vocab: output .model path")
  p.add_argument("--task", default=None, help="show: task name")
  p.add_argument("-n", "--num_examples", type=int, default=3, help="show: examples per template")
  p.add_argument("--split", default="validation", help="show: split")
  p.add_argument("--mixture", default=None, help="vocab: mixture whose text trains it")
  p.add_argument("--size", type=int, default=32000, help="vocab: SentencePiece pieces")
  # Cluster launchers.
  p.add_argument("--nodes", type=int, default=1, help="slurm: nodes")
  p.add_argument("--gpus_per_node", type=int, default=8, help="slurm: GPUs (= processes) per node")
  p.add_argument("--partition", default=None, help="slurm: partition")
  p.add_argument("--time", default="24:00:00", help="slurm: time limit")
  p.add_argument("--job_name", default="flanjax", help="slurm: job name")
  p.add_argument("--tpu", default=None, help="tpu-vm: TPU name")
  p.add_argument("--zone", default=None, help="tpu-vm: zone")
  p.add_argument("--project", default=None, help="tpu-vm: GCP project")
  p.add_argument("--repo_dir", default="~/flanjax", help="tpu-vm: checkout path on the hosts")
  return p


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates `--config.a.b=v` / `--config.a.b v` from the other arguments."""
  rest, overrides = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      key, eq, value = arg[len("--config.") :].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise UsageError(f"--config.{key} needs a value")
        i += 1
        value = argv[i]
      overrides.append((key, value))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def load_config(path: str) -> ml_collections.ConfigDict:
  if not path:
    raise UsageError("--config is required, e.g. --config configs/demo.py")
  if not os.path.isfile(path):
    raise UsageError(f"config file {path} does not exist")
  repo = str(pathlib.Path(__file__).resolve().parents[1])
  if repo not in sys.path:
    sys.path.insert(0, repo)  # config files import configs.common
  spec = importlib.util.spec_from_file_location(f"flanjax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"config file {path} has no get_config()")
  return module.get_config()


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      keys += flat_keys(value, name + ".")
    else:
      keys.append(name)
  return keys


def _parse_value(raw: str, current: Any, field_type: type | None, key: str) -> Any:
  target = field_type or type(current)
  try:
    if target is bool:
      if raw.lower() in ("true", "1", "yes"):
        return True
      if raw.lower() in ("false", "0", "no"):
        return False
      raise ValueError(raw)
    if target in (int, float):
      return target(ast.literal_eval(raw)) if target is int else float(raw)
    if target in (tuple, list):
      value = (
        ast.literal_eval(raw)
        if raw[:1] in "(["
        else tuple(v.strip() for v in raw.split(",") if v.strip())
      )
      return target(value if isinstance(value, (tuple, list)) else (value,))
    if target is str:
      return raw
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError) as e:
    raise UsageError(f"--config.{key}={raw!r}: expected a {target.__name__}") from e


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]):
  known = flat_keys(config)
  for key, raw in overrides:
    if key not in known:
      close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
      hint = f"; did you mean {', '.join('--config.' + c for c in close)}?" if close else ""
      raise UsageError(f"unknown config key --config.{key}{hint}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    field = node._fields[leaf]  # noqa: SLF001 — the typed placeholder, if any
    field_type = getattr(field, "field_type", None)
    current = node[leaf]
    value = _parse_value(raw, current, field_type if current is None else None, key)
    node[leaf] = value
  return config


# ------------------------------------------------------------------ workdir
def _comparable(config_json: dict) -> dict:
  out = json.loads(json.dumps(config_json, default=str))
  for key in RESUMABLE_KEYS:
    *parents, leaf = key.split(".")
    node = out
    for part in parents:
      node = node.get(part, {})
    node.pop(leaf, None)
  return out


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    keys = []
    for k in sorted(set(a) | set(b)):
      keys += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    return keys
  return [] if a == b else [prefix[:-1]]


def config_differences(workdir: str, config: ml_collections.ConfigDict) -> list[str] | None:
  """Keys in which `config` differs from the one recorded in `workdir` (None: nothing recorded).

  Keys that only extend or re-evaluate a run (RESUMABLE_KEYS) do not count.
  """
  saved = pathlib.Path(workdir) / "config.json"
  if not saved.exists():
    return None
  current = json.loads(config.to_json_best_effort())
  return _diff_keys(_comparable(json.loads(saved.read_text())), _comparable(current))


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool) -> None:
  """Records the config; refuses a workdir made by a different config unless `overwrite`."""
  path = pathlib.Path(workdir)
  differs = config_differences(workdir, config)
  if differs is not None:
    if differs and not overwrite:
      raise UsageError(
        f"workdir {workdir} was made by a different config (keys {differs[:6]} differ); pass "
        "--overwrite to start afresh (the old workdir is moved aside, not deleted) or choose "
        "another --workdir"
      )
    if differs:
      aside = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
      shutil.move(str(path), aside)
      print(f"moved the previous run to {aside}")
  elif path.exists() and any(path.iterdir()) and not overwrite:
    raise UsageError(
      f"workdir {workdir} is not empty and has no config.json from a flanjax run; "
      "pass --overwrite or choose another --workdir"
    )
  path.mkdir(parents=True, exist_ok=True)
  current = json.loads(config.to_json_best_effort())
  (path / "config.json").write_text(json.dumps(current, indent=2, sort_keys=True))


# ------------------------------------------------------------------ launchers
def _relaunch_args(argv: list[str]) -> list[str]:
  """argv without the launcher flags (each process runs it with --launcher local)."""
  out, skip = [], False
  drop_with_value = {
    "--launcher",
    "--num_processes",
    "--tpu",
    "--zone",
    "--project",
    "--nodes",
    "--gpus_per_node",
    "--partition",
    "--time",
    "--job_name",
    "--repo_dir",
  }
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg.split("=", 1)[0]
    if name in drop_with_value:
      skip = "=" not in arg
      continue
    if name == "--dry_run":
      continue
    out.append(arg)
  return out


def launch(args, argv: list[str]) -> int:
  """Runs the command through a non-local launcher."""
  inner = _relaunch_args(argv)
  if args.launcher == "multiprocess":
    return launchers.run_multiprocess(inner, args.num_processes)
  if args.launcher == "slurm":
    script = launchers.slurm_script(
      inner,
      nodes=args.nodes,
      gpus_per_node=args.gpus_per_node,
      job_name=args.job_name,
      time_limit=args.time,
      partition=args.partition,
      workdir_for_logs=args.workdir or ".",
    )
    if args.dry_run:
      print(script, end="")
      return 0
    path = os.path.join(args.workdir or ".", "slurm", f"{args.job_name}.sbatch")
    print(launchers.submit_slurm(script, path), end="")
    return 0
  if args.launcher == "tpu-vm":
    command = launchers.tpu_vm_command(
      inner, tpu=args.tpu, zone=args.zone, project=args.project, repo_dir=args.repo_dir
    )
    if args.dry_run:
      print(" ".join(shlex.quote(c) for c in command))
      return 0
    return launchers.run_tpu_vm(command)
  raise UsageError(
    f"unknown --launcher {args.launcher!r}; choose one of {', '.join(launchers.LAUNCHERS)}"
  )


# ------------------------------------------------------------------ entry
def main(argv: list[str]) -> int:
  try:
    rest, overrides = split_overrides(list(argv))
    args = build_parser().parse_args(rest)
    if args.command not in COMMANDS:
      close = difflib.get_close_matches(args.command, COMMANDS, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise UsageError(f"unknown command {args.command!r}{hint} (commands: {', '.join(COMMANDS)})")
    if args.launcher not in launchers.LAUNCHERS:
      raise UsageError(
        f"unknown --launcher {args.launcher!r}; choose one of {', '.join(launchers.LAUNCHERS)}"
      )
    if args.command == "demo" and not args.config:
      args.config = DEMO_CONFIG
    config = None
    if args.command in ("train", "eval", "export", "demo"):
      config = apply_overrides(load_config(args.config), overrides)
      if not args.workdir:
        raise UsageError(f"{args.command} needs --workdir DIR")
    elif overrides:
      raise UsageError(f"--config.* overrides do not apply to {args.command!r}")
    if args.launcher != "local":
      if args.command not in ("train", "eval", "export"):
        raise UsageError(f"--launcher {args.launcher} is for train/eval/export")
      return launch(args, list(argv))
    from flanjax import commands  # heavy imports (jax, seqio) only when something runs

    return commands.run(args, config)
  except (UsageError, launchers.LaunchError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
