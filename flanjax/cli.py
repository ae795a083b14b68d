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
import os
import pathlib
import shlex
import sys
from typing import Any

import ml_collections

from flanjax import launchers
from flanjax.errors import UsageError

COMMANDS = (
  "train",
  "eval",
  "export",
  "predict",
  "plan",
  "compare",
  "tasks",
  "show",
  "vocab",
  "demo",
)
DEMO_CONFIG = "configs/demo.py"


# ------------------------------------------------------------------ parsing
COMMAND_HELP = {
  "train": "fine-tune: --config C --workdir W [--config.a.b=v ...] [--launcher ...]",
  "eval": "evaluate a checkpoint (--workdir W [--checkpoint N]) or an HF model (--hf_model DIR)",
  "export": "write a checkpoint as an HF directory (model + tokenizer): --workdir W --out DIR",
  "predict": "predictions for a file of prompts: (--workdir W | --hf_model D) --input F --output F",
  "plan": "compile train/score/decode for a TPU topology from this host; per-device memory: "
  "--config C --topology v4:2x2x1 [--json]",
  "compare": "eval reports side by side (compare.md, .png): REPORT_OR_EVAL_DIR ... --out DIR",
  "tasks": "list registered tasks, categories, mixtures and row counts",
  "show": "print rendered prompts of a task, every template: --task NAME [-n N] [--split S]",
  "vocab": "train a SentencePiece vocabulary on a mixture: --mixture M --size N --out PATH",
  "demo": "what `make demo` runs: train the demo config (or resume), evaluate, print the report",
}


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
  p.add_argument("--config", help="an ml_collections config file, e.g. configs/demo.py")
  p.add_argument(
    "--import",
    dest="imports",
    action="append",
    default=[],
    metavar="MODULE",
    help="a module registering your own tasks/mixtures (name on the path, or a .py file); "
    "repeatable",
  )
  p.add_argument("--workdir", help="run directory: checkpoints/, metrics.jsonl, eval/, ...")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="train/demo: start afresh in a workdir made by another config; predict: replace "
    "--output (the old one is moved aside, never deleted)",
  )
  if command in ("eval", "export", "predict"):
    p.add_argument("--checkpoint", type=int, default=None, help="step (default: the latest)")
  if command in ("eval", "predict"):
    p.add_argument("--hf_model", default=None, help="an HF T5 directory or hub name")
  if command in ("export", "vocab", "compare"):
    p.add_argument(
      "--out", default=None, help="export: HF dir; vocab: .model path; compare: output dir"
    )
  if command == "compare":
    p.add_argument("reports", nargs="+", metavar="REPORT_OR_EVAL_DIR")
  if command == "predict":
    p.add_argument("--input", default=None, help="prompts .jsonl (field input) or .txt")
    p.add_argument("--output", default=None, help="predictions .jsonl to write")
    p.add_argument("--max_new_tokens", type=int, default=0, help="default: eval.targets")
    p.add_argument("--num_beams", type=int, default=0, help="default: eval.num_beams")
    p.add_argument("--temperature", type=float, default=0.0, help="> 0 samples; 0 greedy/beam")
    p.add_argument("--top_k", type=int, default=0, help="sample from the top k (0: all)")
  if command == "plan":
    p.add_argument(
      "--topology",
      default=None,
      help="GENERATION:SHAPE (v4:2x2x1, v4:4x4x4, v5p:2x2x2, v5e:4x4, v6e:4x4) or local",
    )
    p.add_argument("--json", dest="as_json", action="store_true", help="print the report as JSON")
  if command == "show":
    p.add_argument("--task", default=None, help="task name (see `tools/launch.py tasks`)")
    p.add_argument("-n", "--num_examples", type=int, default=3, help="examples per template")
    p.add_argument("--split", default="validation", help="split to show")
  if command == "vocab":
    p.add_argument("--mixture", default=None, help="mixture whose text trains it")
    p.add_argument("--size", type=int, default=32000, help="SentencePiece pieces")
  if command in ("train", "eval", "export", "predict"):
    g = p.add_argument_group("launchers")
    g.add_argument("--launcher", default="local", help=f"one of {', '.join(launchers.LAUNCHERS)}")
    g.add_argument("--num_processes", type=int, default=2, help="multiprocess: local processes")
    g.add_argument("--dry_run", action="store_true", help="slurm / tpu-vm: print, do not run")
    g.add_argument("--nodes", type=int, default=1, help="slurm: nodes")
    g.add_argument("--gpus_per_node", type=int, default=8, help="slurm: GPUs (processes) per node")
    g.add_argument("--partition", default=None, help="slurm: partition")
    g.add_argument("--time", default="24:00:00", help="slurm: time limit")
    g.add_argument("--job_name", default="flanjax", help="slurm: job name")
    g.add_argument("--port", type=int, default=launchers.SLURM_PORT, help="slurm: coordinator port")
    g.add_argument("--tpu", default=None, help="tpu-vm: TPU name")
    g.add_argument("--zone", default=None, help="tpu-vm: zone")
    g.add_argument("--project", default=None, help="tpu-vm: GCP project")
    g.add_argument("--repo_dir", default="~/flanjax", help="tpu-vm: checkout path on the hosts")
    g.add_argument(
      "--python",
      default=None,
      help="slurm / tpu-vm: interpreter on the nodes (default: this one; python3 on TPU VMs)",
    )


def build_parser() -> argparse.ArgumentParser:
  """`tools/launch.py COMMAND [flags]`; `tools/launch.py COMMAND --help` lists that command's."""
  p = argparse.ArgumentParser(
    prog="tools/launch.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = p.add_subparsers(dest="command", metavar="COMMAND")
  for command in COMMANDS:
    parser = sub.add_parser(command, help=COMMAND_HELP[command], description=COMMAND_HELP[command])
    _add_common(parser, command)
  return p


def parse_args(rest: list[str]) -> argparse.Namespace:
  """Parses flags (overrides already split off); an unknown command gets a close match."""
  commands = [a for a in rest if not a.startswith("-")][:1]
  if not rest or rest[0] in ("-h", "--help"):
    build_parser().print_help()
    raise SystemExit(0)
  if not commands or rest[0] not in COMMANDS:
    name = rest[0]
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})")
  args = build_parser().parse_args(rest)
  for name, default in (("launcher", "local"), ("hf_model", None), ("checkpoint", None)):
    if not hasattr(args, name):
      setattr(args, name, default)
  return args


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


def base_config_dict() -> ml_collections.ConfigDict:
  """Every key at its default (commands such as `tasks` and `show` run without --config)."""
  from flanjax.config import default_config_dict

  return default_config_dict()


def recorded_run_config(workdir: str):
  """The RunConfig a workdir was trained with (its config.json)."""
  from flanjax.config import RunConfig
  from flanjax.workdir import recorded_config

  recorded = recorded_config(workdir)
  if recorded is None:
    raise UsageError(f"{workdir} has no config.json from a flanjax run: pass --config")
  try:
    return RunConfig.from_recorded(recorded)
  except (KeyError, ValueError) as error:
    raise UsageError(f"{workdir}/config.json: {error}") from None


def read_run_config(config: ml_collections.ConfigDict):
  """The ConfigDict → `RunConfig` (the one reader); its errors become one-line usage errors."""
  from flanjax.config import RunConfig

  try:
    return RunConfig.from_config_dict(config)
  except (KeyError, ValueError) as error:
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    raise UsageError(message) from None


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
    "--port",
    "--python",
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


def _is_file_arg(flag: str | None, value: str) -> bool:
  """The config file, or a user module given as a .py path (a module name stays as it is)."""
  return flag == "--config" or (flag == "--import" and value.endswith(".py"))


def _absolute_file_args(argv: list[str]) -> list[str]:
  """argv with the values of `--config` and `--import x.py` (either spelling) made absolute.

  Example: ["--config", "configs/demo.py", "--import=t.py"] -> ["--config", "/repo/configs/
  demo.py", "--import=/cwd/t.py"].
  """
  out, previous = [], None
  for arg in argv:
    flag, eq, value = arg.partition("=")
    if eq and _is_file_arg(flag, value):
      out.append(f"{flag}={os.path.abspath(value)}")
    elif _is_file_arg(previous, arg):
      out.append(os.path.abspath(arg))
    else:
      out.append(arg)
    previous = arg
  return out


def remote_args(args, argv: list[str], config) -> list[str]:
  """What every launched process runs: argv without launcher flags, plus what the run needs
  that would otherwise come from this shell (the data dir from env FLANJAX_DATA_DIR, as
  `--config.data_dir`), and the config file as an absolute path (slurm runs from the repo).
  """
  inner = _relaunch_args(argv)
  if args.launcher in ("slurm", "multiprocess"):  # same file system, maybe another directory
    inner = _absolute_file_args(inner)
  data_dir = os.environ.get("FLANJAX_DATA_DIR", "")
  if config is not None and not read_run_config(config).data.data_dir and data_dir:
    inner.append(f"--config.data_dir={os.path.abspath(data_dir)}")
  return inner


def launch(args, argv: list[str], config=None) -> int:
  """Runs the command through a non-local launcher."""
  inner = remote_args(args, argv, config)
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
      python=args.python,
      port=args.port,
    )
    if args.dry_run:
      print(script, end="")
      return 0
    path = os.path.join(args.workdir or ".", "slurm", f"{args.job_name}.sbatch")
    print(launchers.submit_slurm(script, path), end="")
    return 0
  if args.launcher == "tpu-vm":
    command = launchers.tpu_vm_command(
      inner,
      tpu=args.tpu,
      zone=args.zone,
      project=args.project,
      repo_dir=args.repo_dir,
      python=args.python,
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
    args = parse_args(rest)
    if args.launcher not in launchers.LAUNCHERS:
      raise UsageError(
        f"unknown --launcher {args.launcher!r}; choose one of {', '.join(launchers.LAUNCHERS)}"
      )
    if args.command == "demo" and not args.config:
      args.config = DEMO_CONFIG
    if args.command in ("train", "eval", "export", "demo") and not args.workdir:
      raise UsageError(f"{args.command} needs --workdir DIR")
    if args.command == "predict" and not args.config and args.workdir:
      if overrides:
        raise UsageError("--config.* overrides need --config (predict)")
      from flanjax import commands

      return commands.run(args, recorded_run_config(args.workdir))
    if args.command == "plan" and not args.topology:
      raise UsageError("plan needs --topology NAME, e.g. --topology v4:2x2x1 (or local)")
    if args.config:
      config = apply_overrides(load_config(args.config), overrides)
    elif args.command in ("train", "eval", "export", "plan"):
      raise UsageError("--config is required, e.g. --config configs/demo.py")
    elif overrides:
      raise UsageError(f"--config.* overrides need --config (for {args.command!r})")
    else:
      config = base_config_dict()
    if args.launcher != "local":
      if args.command not in ("train", "eval", "export"):
        raise UsageError(f"--launcher {args.launcher} is for train/eval/export")
      return launch(args, list(argv), config)
    from flanjax import commands  # heavy imports (jax, seqio) only when something runs

    return commands.run(args, read_run_config(config))
  except (UsageError, launchers.LaunchError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
