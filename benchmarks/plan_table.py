"""Does every FLAN-T5 config fit its stated hardware? `plan` for each, as one markdown table.

    python benchmarks/plan_table.py [--configs 'configs/flan_t5_*.py']
        [--topology v4:2x2x1] [--steps train,score,decode] [--details] [--config.a.b=value ...]

Each config is planned on the topology its docstring states on a `Fits:` line (e.g.
`Fits:      v4:2x2x1 (train batch 64, 2048/512)`), else on DEFAULT_TOPOLOGY for its size;
`--topology` plans them all on one. `--config.*` overrides apply to every config (e.g. the batch
size). Prints a markdown table, the README's: config (parameters), topology, batch,
microbatches, the per-device total of each step (train, score, decode; ✗ where it does not
fit), HBM, verdict and compile seconds summed over the steps; `--details` also prints each
full `plan` report. Exit 1 when any config does not fit. Needs the `tpu` extra (libtpu); no
accelerator is used.

Example output (2 CPU cores shared with a test run: the five FLAN-T5 configs take about 15 min):
  | config | topology | batch | microbatches | train | score | decode | HBM | verdict | compile s
  | flan_t5_small (76.96M) | v4:2x2x1 | 64 | 1 | 5.42 GiB | 7.92 GiB | 2.27 GiB | 30.75 GiB | FITS
"""

from __future__ import annotations

import argparse
import glob
import os
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# A CPU host: no TPU probe when jax starts (libtpu still compiles for the topologies).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flanjax import cli, plan  # noqa: E402
from flanjax.config import RunConfig  # noqa: E402

# Where a config without a `Fits:` line is planned, by the size in its file name.
DEFAULT_TOPOLOGY = {  # the smallest slice each size was planned to fit (the Fits: lines)
  "small": "v4:2x2x1",
  "base": "v4:2x2x1",
  "large": "v4:2x2x1",
  "xl": "v4:2x2x1",
  "xxl": "v4:2x2x2",
}
_FITS_BLOCK = re.compile(r"^\s*Fits:(.*?)(?=^\s*[A-Z][a-z]+:\s|\Z)", re.MULTILINE | re.DOTALL)
_STEP_FIGURE = re.compile(r"\b(train|score|decode) ([0-9.]+) GiB")


def _fits_text(path: str) -> str:
  """A config docstring's `Fits:` entry on one line (its continuation lines joined), or ""."""
  block = _FITS_BLOCK.search(pathlib.Path(path).read_text())
  return " ".join(block.group(1).split()) if block else ""


def stated_figures(path: str) -> dict[str, float]:
  """Per-device totals (GiB) per step that a config's `Fits:` line states, e.g.
  `Fits: v4:2x2x1 (...): per device train 2.96 GiB, score 7.92 GiB, ...` -> {"train": 2.96,
  "score": 7.92, ...}; {} when the config has no such line."""
  return {step: float(gib) for step, gib in _STEP_FIGURE.findall(_fits_text(path))}


def stated_topology(path: str) -> str | None:
  """The topology a config's docstring states on its `Fits:` line, else the size default.

  Example: a docstring line `Fits:      v5p:2x2x2 (batch 256)` -> "v5p:2x2x2";
  configs/flan_t5_xl.py without one -> "v4:4x4x4".
  """
  found = _fits_text(path)
  if found:
    return found.split()[0]
  size = pathlib.Path(path).stem.rsplit("_", 1)[-1]
  return DEFAULT_TOPOLOGY.get(size)


def _millions(n: int) -> str:
  return f"{n / 1e6:.2f}M"


def table_row(name: str, rc: RunConfig, report: plan.PlanReport) -> str:
  """One README row: config (params), topology, batch, microbatches, per-device total of each
  step, HBM, verdict, compile seconds summed over the steps."""
  worst = max(report.steps, key=lambda s: (s.total_bytes or 0) / s.hbm_bytes)
  by_step = {s.name: s for s in report.steps}
  totals = [
    plan.format_bytes(by_step[n].total_bytes) + ("" if by_step[n].fits else " ✗")
    if n in by_step
    else "-"
    for n in plan.STEPS
  ]
  verdict = plan.FITS if report.fits else f"{plan.DOES_NOT_FIT} ({worst.name})"
  cells = (
    f"{name} ({_millions(report.param_count)})",
    report.topology,
    str(rc.train.batch_size),
    str(rc.train.microbatches),
    *totals,
    plan.format_bytes(worst.hbm_bytes),
    verdict,
    f"{sum(s.compile_seconds for s in report.steps):.0f}",
  )
  return "| " + " | ".join(cells) + " |"


HEADER = (
  "| config | topology | batch | microbatches | train | score | decode | HBM | verdict "
  "| compile s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
)


def main(argv: list[str]) -> int:
  rest, overrides = cli.split_overrides(list(argv))
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="configs/flan_t5_*.py", help="glob of config files")
  parser.add_argument("--topology", default=None, help="plan every config on this topology")
  parser.add_argument("--steps", default="train,score,decode", help="comma list of steps")
  parser.add_argument("--details", action="store_true", help="print each full plan report")
  args = parser.parse_args(rest)
  paths = sorted(glob.glob(args.configs))
  if not paths:
    parser.error(f"--configs {args.configs!r} matches no file")
  steps = tuple(s for s in args.steps.split(",") if s)
  lines, all_fit = [HEADER], True
  for path in paths:
    name = pathlib.Path(path).stem
    topology = args.topology or stated_topology(path)
    if topology is None:
      lines.append(f"| {name} | (no Fits: line, no default) | | | | | skipped | |")
      continue
    rc = RunConfig.from_config_dict(cli.apply_overrides(cli.load_config(path), overrides))
    report = plan.plan(rc, topology, steps=steps)
    all_fit &= report.fits
    if args.details:
      print(f"## {name}\n\n{report.render()}\n", flush=True)
    lines.append(table_row(name, rc, report))
    print(lines[-1], file=sys.stderr, flush=True)  # progress: compiles take minutes
  print("\n".join(lines))
  return 0 if all_fit else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
