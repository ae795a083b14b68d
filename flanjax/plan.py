"""`tools/launch.py plan`: will this run fit on that TPU slice? Compiled ahead of time, from a CPU.

`plan(rc, topology)` builds the run's train step (exactly as the training loop jits it: donated
state, FSDP/TP shardings from the logical axis rules, microbatches, the packed batch), the
rank-classification scoring step and the cached decoding step of evaluation, lowers them with
`ShapeDtypeStruct`s sharded on a mesh of the topology's devices, and compiles them for that
topology (flanjax/plan_compile.py). Nothing is allocated. For each step it reports the compiler's
per-device memory (arguments, outputs, aliased, temporaries, total) against the usable HBM the
compiler states, the compiled FLOPs beside flanjax/train/flops.py's formula, and the compile
time; a compiler out-of-memory refusal becomes a DOES NOT FIT verdict with its figures and the
config knobs that would help.

Example (on a CPU host with the `tpu` extra installed):
  >>> report = plan(rc, "v4:2x2x1")  # rc: RunConfig of configs/flan_t5_large.py
  >>> report.fits, [step.verdict for step in report.steps]
  (False, ['DOES NOT FIT', 'FITS', 'FITS'])
  >>> report.steps[0].advice[0]
  '--config.model.remat=full (recompute each layer in the backward pass)'
  >>> print(report.render())  # the table; report.to_json() for scripts
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flanjax import partitioning
from flanjax import plan_compile as pc
from flanjax.config import RunConfig
from flanjax.model import decode, t5
from flanjax.train import flops, state, step

FITS, DOES_NOT_FIT = "FITS", "DOES NOT FIT"
STEPS = ("train", "score", "decode")
NUM_OPTIONS = 4  # option slots per input for the scoring step (FLAN's tasks mostly have 2-4)
_FLOAT_KEYS = ("decoder_loss_weights",)


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """One compiled step. Byte figures are per device; FLOPs are per step over all devices."""

  name: str  # "train", "score", "decode"
  shapes: str  # e.g. "batch 64, 2048/512"
  verdict: str  # FITS or DOES NOT FIT
  hbm_bytes: int
  compile_seconds: float
  argument_bytes: int | None = None
  output_bytes: int | None = None
  alias_bytes: int | None = None
  temp_bytes: int | None = None
  total_bytes: int | None = None  # what the compiler needs (its own figure when it refused)
  compiled_flops: float | None = None
  formula_flops: float | None = None
  compiler_message: str = ""  # the compiler's out-of-memory line, when it refused
  advice: tuple[str, ...] = ()

  @property
  def fits(self) -> bool:
    return self.verdict == FITS


@dataclasses.dataclass(frozen=True)
class PlanReport:
  """What `plan` found; `.fits` only when every step fits."""

  topology: str
  device_kind: str
  num_devices: int
  num_hosts: int
  mesh: dict[str, int]
  hbm_bytes: int
  hbm_source: str
  param_count: int
  param_bytes_per_device: int
  optimizer_bytes_per_device: int
  steps: tuple[StepPlan, ...]

  @property
  def fits(self) -> bool:
    return all(s.fits for s in self.steps)

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["fits"] = self.fits
    return out

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  def render(self) -> str:
    mesh = " x ".join(f"{name}={size}" for name, size in self.mesh.items())
    lines = [
      f"topology {self.topology}: {self.num_devices} x {self.device_kind} "
      f"({self.num_hosts} host{'s' if self.num_hosts > 1 else ''}), mesh {mesh}",
      f"HBM per device: {format_bytes(self.hbm_bytes)} ({self.hbm_source})",
      f"parameters: {self.param_count:,} ({format_bytes(self.param_bytes_per_device)} per device); "
      f"optimizer state: {format_bytes(self.optimizer_bytes_per_device)} per device",
      "",
    ]
    header = (
      "step",
      "shapes",
      "arguments",
      "outputs",
      "aliased",
      "temporaries",
      "total",
      "HBM",
      "FLOPs compiled",
      "FLOPs formula",
      "compile s",
      "verdict",
    )
    rows = [header]
    for s in self.steps:
      rows.append(
        (
          s.name,
          s.shapes,
          format_bytes(s.argument_bytes),
          format_bytes(s.output_bytes),
          format_bytes(s.alias_bytes),
          format_bytes(s.temp_bytes),
          format_bytes(s.total_bytes),
          format_bytes(s.hbm_bytes),
          _flops(s.compiled_flops),
          _flops(s.formula_flops),
          f"{s.compile_seconds:.1f}",
          s.verdict,
        )
      )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
      lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for s in self.steps:
      if s.fits:
        continue
      lines.append("")
      lines.append(f"{s.name}: {DOES_NOT_FIT} on {self.topology}")
      if s.compiler_message:
        lines.append(f"  compiler: {s.compiler_message}")
      lines.extend(f"  try: {advice}" for advice in s.advice)
    lines.append("")
    lines.append(f"verdict: {FITS if self.fits else DOES_NOT_FIT}")
    return "\n".join(lines)


def format_bytes(n: int | None) -> str:
  """1610612736 -> '1.50 GiB', 3670016 -> '3.5 MiB', 512 -> '512 B', None -> '-'."""
  if n is None:
    return "-"
  if n >= 1 << 30:
    return f"{n / (1 << 30):.2f} GiB"
  if n >= 1 << 20:
    return f"{n / (1 << 20):.1f} MiB"
  if n >= 1 << 10:
    return f"{n / (1 << 10):.1f} KiB"
  return f"{n} B"


def _flops(n: float | None) -> str:
  return "-" if n is None else f"{n:.3g}"


# ---------------------------------------------------------------------------------- steps
def _batch_spec(mesh: Mesh) -> NamedSharding:
  return partitioning.batch_sharding(mesh)


def _check_rows(rows: int, mesh: Mesh, key: str) -> None:
  shards = partitioning.batch_shards(mesh)
  if rows % shards:
    raise ValueError(
      f"config.{key}={rows} does not divide over the {shards} batch shards "
      f"(mesh.data x mesh.fsdp) of this topology"
    )


def abstract_train_batch(rc: RunConfig, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global packed batch the loop feeds the step: [batch, length], rows over data x fsdp."""
  sharding = _batch_spec(mesh)
  keys = step.BATCH_KEYS + (step.PACKING_KEYS if rc.data.pack else ())
  batch = {}
  for key in keys:
    length = rc.data.input_length if key.startswith("encoder") else rc.data.target_length
    dtype = np.float32 if key in _FLOAT_KEYS else np.int32
    batch[key] = pc.abstract((rc.train.batch_size, length), dtype, sharding)
  return batch


def _lower_train(rc: RunConfig, mesh: Mesh, abstract_state, shardings):
  train_step = step.jit_run_train_step(rc, shardings, mesh)  # exactly what the loop runs
  batch = abstract_train_batch(rc, mesh)

  def lower():
    with jax.set_mesh(mesh):
      return train_step.jitted.lower(abstract_state, batch)

  return lower, (abstract_state, batch)


def _lower_score(rc: RunConfig, mesh: Mesh, params):
  from flanjax.eval import rank

  ec = rc.eval_config
  # rank_classify's rows per batch; its longest buckets (inputs and options are capped at these).
  rows = partitioning.padded_rows(ec.batch_size, mesh)
  input_length, target_length = ec.input_length, ec.target_length
  sharding = _batch_spec(mesh)
  scorer = rank._shared_encoder_scorer(rc.model)  # noqa: SLF001 — the step eval runs
  inputs = pc.abstract((rows, input_length), np.int32, sharding)
  options = pc.abstract((rows, NUM_OPTIONS, target_length), np.int32, sharding)

  def lower():
    with jax.set_mesh(mesh):
      return scorer.lower(params, inputs, options)

  return lower, (params, inputs, options)


def _lower_decode(rc: RunConfig, mesh: Mesh, params):
  ec = rc.eval_config
  # eval decodes batches of padded_rows(batch_size) prompts; generate pads them to batch_rows.
  rows = decode.batch_rows(partitioning.padded_rows(ec.batch_size, mesh), mesh)
  input_length = decode.bucket(ec.input_length, 16)
  sharding = _batch_spec(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  ids = pc.abstract((rows, input_length), np.int32, sharding)
  scalars = (
    pc.abstract((), np.int32, replicated),  # max_new_tokens
    pc.abstract((), np.float32, replicated),  # temperature
    pc.abstract((), np.float32, replicated),  # length_penalty
    pc.abstract((2,), np.uint32, replicated),  # PRNGKey(seed)
  )

  def lower():
    with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
      return decode._decode.lower(  # noqa: SLF001 — the jitted program generate() runs
        params,
        ids,
        ids,
        *scalars,
        config=rc.model,
        cache_len=decode.bucket(ec.target_length),
        num_beams=int(ec.num_beams),
        do_sample=False,
        top_k=0,
      )

  return lower, (params, ids, ids, scalars)


# ---------------------------------------------------------------------------------- advice
def _train_advice(rc: RunConfig, mesh: Mesh, step_plan: StepPlan) -> list[str]:
  """Config knobs that cut the train step's per-device memory, most effective first."""
  advice = []
  model = rc.model
  hbm, resident = step_plan.hbm_bytes, step_plan.argument_bytes or 0
  if resident >= hbm:
    advice.append(
      f"the train state alone takes {format_bytes(resident)} per device: spread it over more "
      "chips (a larger --topology with --config.mesh.fsdp=-1)"
    )
  if hasattr(model, "remat") and model.remat != "full":
    advice.append("--config.model.remat=full (recompute each layer in the backward pass)")
  activations = (step_plan.total_bytes or 0) - resident
  room = hbm - resident
  if activations > 0 and room > 0:
    factor = max(2, math.ceil(activations / room))
    shards = partitioning.batch_shards(mesh)
    micro = pc.smallest_divisor_at_least(
      rc.train.batch_size, rc.train.microbatches * factor, shards
    )
    if micro:
      advice.append(
        f"--config.train.microbatches={micro} (activations, {format_bytes(activations)} now, "
        f"shrink about {micro // rc.train.microbatches}x; {format_bytes(room)} is free)"
      )
  if getattr(model, "attention", "flash") == "xla":
    advice.append("--config.model.attention=flash (no [batch, heads, q, k] scores kept)")
  if rc.mesh.data != 1:
    advice.append(
      "--config.mesh.data=1 --config.mesh.fsdp=-1 (shard parameters and optimizer state "
      "instead of replicating them)"
    )
  if mesh.shape["model"] == 1 and mesh.size > 1:
    advice.append(
      "--config.mesh.model=2 (or 4; tensor parallelism splits heads, mlp and vocab activations)"
    )
  return advice


def _eval_advice(rc: RunConfig, mesh: Mesh) -> list[str]:
  shards = partitioning.batch_shards(mesh)
  smaller = pc.smallest_divisor_at_least(rc.eval.batch_size, 2, shards)
  advice = []
  if smaller:
    advice.append(f"--config.eval.batch_size={rc.eval.batch_size // smaller}")
  if mesh.shape["model"] == 1 and mesh.size > 1:
    advice.append("--config.mesh.model=2 (tensor parallelism splits the activations)")
  return advice


def _step_plan(
  name: str,
  shapes: str,
  compiled: pc.Compiled,
  hbm: int,
  *,
  inputs: Any,
  num_devices: int,
  formula_flops: float | None = None,
) -> StepPlan:
  if compiled.oom is not None:
    # The compiler's figure counts arguments too; they are exactly the inputs' shards.
    return StepPlan(
      name=name,
      shapes=shapes,
      verdict=DOES_NOT_FIT,
      hbm_bytes=compiled.oom.available_bytes or hbm,
      compile_seconds=compiled.seconds,
      argument_bytes=pc.shard_bytes(inputs),
      total_bytes=compiled.oom.required_bytes,
      formula_flops=formula_flops,
      compiler_message=compiled.oom.message,
    )
  per_device = compiled.flops_per_device
  return StepPlan(
    name=name,
    shapes=shapes,
    verdict=FITS if compiled.total_bytes <= hbm else DOES_NOT_FIT,
    hbm_bytes=hbm,
    compile_seconds=compiled.seconds,
    argument_bytes=compiled.argument_bytes,
    output_bytes=compiled.output_bytes,
    alias_bytes=compiled.alias_bytes,
    temp_bytes=compiled.temp_bytes,
    total_bytes=compiled.total_bytes,
    compiled_flops=None if per_device is None else per_device * num_devices,
    formula_flops=formula_flops,
  )


def plan(rc: RunConfig, topology: str, *, steps: tuple[str, ...] = STEPS) -> PlanReport:
  """Compiles the run's steps for `topology` (e.g. "v4:2x2x1", or "local") -> PlanReport.

  `steps` picks a subset of STEPS (the benchmark and tests compile only what they look at).
  Raises ValueError naming the key to fix when the config does not divide over the topology
  (mesh axes, batch sizes), and pc.TopologyError for an unknown topology or missing libtpu.
  """
  devices = pc.topology_devices(topology)
  hosts = pc.process_count(devices)
  rc.validate(len(devices), hosts)
  mesh = partitioning.make_mesh(rc.mesh, devices=devices)
  hbm, hbm_source = pc.usable_hbm(devices)
  abstract_state, shardings = state.abstract_run_state(rc, mesh)
  abstract_state = state.abstract_with_shardings(abstract_state, shardings)
  params = abstract_state.params
  results = []
  if "train" in steps:
    _check_rows(rc.train.batch_size // rc.train.microbatches, mesh, "train.batch_size")
    lower, inputs = _lower_train(rc, mesh, abstract_state, shardings)
    compiled = pc.compile_step(lower)
    shapes = f"batch {rc.train.batch_size}, {rc.data.input_length}/{rc.data.target_length}"
    if rc.train.microbatches > 1:
      shapes += f", {rc.train.microbatches} microbatches"
    formula = rc.train.batch_size * flops.train_flops_per_sequence(
      rc.model, rc.data.input_length, rc.data.target_length
    )
    plan_ = _step_plan(
      "train", shapes, compiled, hbm, inputs=inputs, num_devices=len(devices), formula_flops=formula
    )
    if not plan_.fits:
      plan_ = dataclasses.replace(plan_, advice=tuple(_train_advice(rc, mesh, plan_)))
    results.append(plan_)
  ec = rc.eval_config
  rows = partitioning.padded_rows(ec.batch_size, mesh)  # eval rounds its batches up to the shards
  input_length, target_length = ec.input_length, ec.target_length
  for name, lower_fn, shapes in (
    ("score", _lower_score, f"{rows} x {NUM_OPTIONS} options, {input_length}/{target_length}"),
    (
      "decode",
      _lower_decode,
      f"{decode.batch_rows(rows, mesh)} rows, {input_length} -> {target_length} tokens, "
      f"{rc.eval.num_beams} beam(s)",
    ),
  ):
    if name not in steps:
      continue
    lower, inputs = lower_fn(rc, mesh, params)
    compiled = pc.compile_step(lower)
    plan_ = _step_plan(name, shapes, compiled, hbm, inputs=inputs, num_devices=len(devices))
    if not plan_.fits:
      plan_ = dataclasses.replace(plan_, advice=tuple(_eval_advice(rc, mesh)))
    results.append(plan_)
  return PlanReport(
    topology=topology,
    device_kind=devices[0].device_kind,
    num_devices=len(devices),
    num_hosts=hosts,
    mesh=dict(mesh.shape),
    hbm_bytes=hbm,
    hbm_source=hbm_source,
    param_count=t5.count_params(params),
    param_bytes_per_device=pc.shard_bytes(params),
    optimizer_bytes_per_device=pc.shard_bytes(abstract_state.opt_state),
    steps=tuple(results),
  )


def plan_command(
  rc: RunConfig, topology: str, as_json: bool = False, *, steps: tuple[str, ...] = STEPS
) -> int:
  """`tools/launch.py plan`: prints the report (or its JSON); 0 only when every step fits, 1 when
  one does not, 2 for a topology libtpu cannot build (or no libtpu)."""
  try:
    report = plan(rc, topology, steps=steps)
  except pc.TopologyError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(report.to_json() if as_json else report.render())
  return 0 if report.fits else 1
