"""`plan`: the run's steps compiled for a TPU topology from this CPU host (libtpu), or `local`."""

import importlib.util
import json
import pathlib

import pytest

from flanjax import cli, plan
from flanjax import plan_compile as pc
from flanjax.config import RunConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
needs_libtpu = pytest.mark.skipif(
  not pc.libtpu_available(),
  reason="libtpu is not installed: `pip install -e '.[tpu]'` (make test installs it) to compile "
  "for TPU topologies from a CPU host",
)
# A two-layer T5 at short lengths: every step compiles in seconds.
TINY = [
  ("lengths.inputs", "64"),
  ("lengths.targets", "16"),
  ("train.batch_size", "8"),
  ("eval.batch_size", "8"),
]


def _run_config(name: str, overrides) -> RunConfig:
  config = cli.load_config(str(REPO / "configs" / f"{name}.py"))
  return RunConfig.from_config_dict(cli.apply_overrides(config, list(overrides)))


def test_parse_oom_reads_both_phrasings():
  temporaries = pc.parse_oom(
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (23.84G) exceeds available HBM (15.25G)."
  )
  assert temporaries.required_bytes == int(23.84 * (1 << 30))
  assert temporaries.available_bytes == int(15.25 * (1 << 30))
  used = pc.parse_oom(
    "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space "
    "hbm. Used 22.03G of 15.48G hbm. Exceeded hbm capacity by 6.55G."
  )
  assert (used.required_bytes, used.available_bytes) == (
    int(22.03 * (1 << 30)),
    int(15.48 * (1 << 30)),
  )
  assert pc.parse_oom("INVALID_ARGUMENT: shapes differ") is None


def test_format_bytes():
  assert [plan.format_bytes(n) for n in (None, 512, 3670016, 1610612736)] == [
    "-",
    "512 B",
    "3.5 MiB",
    "1.50 GiB",
  ]


def test_local_topology_plans_on_this_host():
  rc = _run_config("flan_mini_tiny", TINY)
  report = plan.plan(rc, "local")
  assert report.fits, report.render()
  assert report.device_kind and report.num_devices >= 1
  assert [s.name for s in report.steps] == ["train", "score", "decode"]
  train = report.steps[0]
  assert train.total_bytes > 0 and train.compiled_flops > 0
  assert json.loads(report.to_json())["fits"] is True


@needs_libtpu
def test_tiny_config_fits_on_v4():
  rc = _run_config("flan_mini_tiny", TINY)
  report = plan.plan(rc, "v4:2x2x1")
  assert report.fits, report.render()
  # Megacore: one device per chip, 32 GiB of HBM of which the compiler grants 30.75 GiB.
  assert (report.num_devices, report.device_kind) == (4, "TPU v4")
  assert report.hbm_source.startswith("compiler") and 30 << 30 < report.hbm_bytes <= 32 << 30
  assert report.mesh == {"data": 1, "fsdp": 4, "model": 1}
  assert report.param_count == 886_528
  assert 0 < report.param_bytes_per_device < report.param_count * 4  # sharded over fsdp
  assert report.optimizer_bytes_per_device > 0
  for step in report.steps:
    assert step.argument_bytes > 0 and step.temp_bytes >= 0 and step.compile_seconds > 0
    assert 0 < step.total_bytes <= step.hbm_bytes and step.compiled_flops > 0
  train = report.steps[0]
  assert train.alias_bytes > 0  # the state is donated
  assert 0.5 < train.compiled_flops / train.formula_flops < 2.0
  text = report.render()
  assert "verdict: FITS" in text and "TPU v4" in text


@needs_libtpu
def test_impossible_batch_does_not_fit(capsys):
  # 65536 rows of 512/128 tokens: far beyond one v4 chip, whatever the model.
  rc = _run_config("flan_mini_tiny", [("train.batch_size", "65536")])
  code = plan.plan_command(rc, "v4:2x2x1", steps=("train",))
  out, err = capsys.readouterr()
  assert code == 1
  assert "Traceback" not in out + err
  assert "train: DOES NOT FIT on v4:2x2x1" in out
  assert "exceeds available HBM (30.75G)" in out  # the compiler's own figures
  assert "--config.train.microbatches=" in out and "verdict: DOES NOT FIT" in out


@needs_libtpu
def test_unknown_topology_names_the_flag(capsys):
  rc = _run_config("flan_mini_tiny", TINY)
  assert plan.plan_command(rc, "v4:banana") == 2
  assert "--topology 'v4:banana'" in capsys.readouterr().err


def test_mesh_that_does_not_divide_names_the_key():
  rc = _run_config("flan_mini_tiny", TINY + [("mesh.fsdp", "3"), ("mesh.data", "-1")])
  with pytest.raises(ValueError, match="mesh"):
    plan.plan(rc, "local" if not pc.libtpu_available() else "v4:2x2x1")


def _plan_table():
  """benchmarks/plan_table.py, the one command behind the configs' `Fits:` lines."""
  spec = importlib.util.spec_from_file_location("plan_table", REPO / "benchmarks/plan_table.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@needs_libtpu
@pytest.mark.parametrize("size", ["small", "base"])
def test_flan_t5_recipe_fits_its_stated_topology(size):
  """The recipe as shipped (batch 64, 2048/512, its microbatches) compiles for the topology on
  its `Fits:` line, every step FITS, and each per-device total is the one the line states."""
  path = REPO / "configs" / f"flan_t5_{size}.py"
  table = _plan_table()
  topology, stated = table.stated_topology(str(path)), table.stated_figures(str(path))
  assert topology and set(stated) == set(plan.STEPS), f"{path.name}: no complete Fits: line"
  report = plan.plan(_run_config(f"flan_t5_{size}", []), topology)
  assert report.fits, report.render()
  got = {step.name: step.total_bytes / (1 << 30) for step in report.steps}
  assert got == pytest.approx(stated, rel=0.01, abs=0.01), report.render()
