"""`load_sharded_params` in its own process, for a forced device count or several processes.

Usage: python tests/model/hf_sharded_worker.py '<json spec>'. The parent sets XLA_FLAGS (device
count) and, for multi-process runs, FLANJAX_COORDINATOR / FLANJAX_NUM_PROCESSES /
FLANJAX_PROCESS_ID. Spec keys:
  mode "compare": cases [{dir, scan, mesh [data, fsdp, model], dtype}]: the sharded load equals
    `hf.load_pretrained` bitwise, shard by shard, with the requested shardings; prints "ok ...".
  mode "memory": dir, mesh, out (a JSON file per process: RSS figures in kB) and old (true: the
    old path, `hf.load_pretrained`, instead).

Example:
  $ XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/model/hf_sharded_worker.py \
      '{"mode": "compare", "cases": [{"dir": "/tmp/t5", "scan": false, "mesh": [1, 4, 1]}]}'
"""

import gc
import json
import pathlib
import sys

# Make the repository importable when the package is not installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from flanjax.train import distributed  # noqa: E402

distributed.initialize_from_env()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from flanjax import partitioning  # noqa: E402
from flanjax.model import hf, hf_sharded, t5  # noqa: E402
from flanjax.train import optim, state  # noqa: E402


def param_shardings(config, mesh_shape):
  """The parameter shardings of the train state, as the loop builds them."""
  mesh = partitioning.make_mesh(partitioning.MeshConfig(*mesh_shape))
  _, shardings = state.abstract_train_state(
    init_fn=lambda rng: t5.init_params(config, rng),
    logical_specs=t5.param_logical_axes(config),
    optimizer=optim.make_optimizer(optim.OptimizerConfig(), 10),
    mesh=mesh,
  )
  return shardings.params


def bits(array: np.ndarray) -> np.ndarray:
  return np.asarray(array).view(np.uint8)


def compare(case: dict) -> None:
  reference = hf.load_pretrained(
    case["dir"], case.get("dtype", "float32"), scan_layers=case["scan"]
  )
  shardings = param_shardings(reference.config, case["mesh"])
  loaded = hf_sharded.load_sharded_params(case["dir"], reference.config, shardings)
  flat_expected = jax.tree_util.tree_flatten_with_path(reference.params)[0]
  flat_loaded = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  flat_shardings = dict(jax.tree_util.tree_flatten_with_path(shardings)[0])
  assert set(flat_loaded) == {path for path, _ in flat_expected}, "different trees"
  split = 0
  for path, expected in flat_expected:
    expected = np.asarray(expected)
    array, name = flat_loaded[path], jax.tree_util.keystr(path)
    assert array.sharding == flat_shardings[path], (name, array.sharding, flat_shardings[path])
    assert array.dtype == expected.dtype and array.shape == expected.shape, name
    assert np.array_equal(bits(array), bits(expected)), f"{name} differs"
    for shard in array.addressable_shards:
      assert np.array_equal(bits(shard.data), bits(expected[shard.index])), (name, shard.index)
    split += len({str(shard.index) for shard in array.addressable_shards}) > 1
  print(f"ok {case} ({len(flat_expected)} params, {split} split)", flush=True)


def memory_kb() -> dict[str, int]:
  fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
  return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def memory(spec: dict) -> None:
  config = hf_sharded.checkpoint_config(spec["dir"])
  if not spec.get("old"):
    shardings = param_shardings(config, spec["mesh"])
  gc.collect()
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS: the peak below is the load's own
  before = memory_kb()
  if spec.get("old"):
    params = hf.load_pretrained(spec["dir"]).params
  else:
    params = hf_sharded.load_sharded_params(spec["dir"], config, shardings)
  jax.block_until_ready(params)
  after = memory_kb()
  local_bytes = sum(
    shard.data.nbytes for leaf in jax.tree.leaves(params) for shard in leaf.addressable_shards
  )
  result = {
    "process": jax.process_index(),
    "before": before,
    "after": after,
    "growth_kb": after["VmHWM"] - before["VmRSS"],
    "local_shard_bytes": local_bytes,
  }
  if not spec.get("old"):
    result["checked_shards"] = check_against_file(spec["dir"], config, params)
  pathlib.Path(spec["out"]).write_text(json.dumps(result))


def check_against_file(directory: str, config, params) -> int:
  """Every local shard equals the slice of its whole HF tensor (read now, one at a time)."""
  from safetensors import safe_open

  flat = {p: a for p, a in jax.tree_util.tree_flatten_with_path(params)[0]}
  checked = 0
  with safe_open(f"{directory}/{hf.SAFETENSORS_FILE}", framework="numpy") as f:
    for hf_name, path, kind in hf.rename_table(config):
      key = tuple(jax.tree_util.DictKey(k) for k in path)
      whole = hf._to_ours(f.get_tensor(hf_name), kind, config)
      for shard in flat[key].addressable_shards:
        assert np.array_equal(np.asarray(shard.data), whole[shard.index]), (path, shard.index)
        checked += 1
  return checked


def main():
  spec = json.loads(sys.argv[1])
  if spec["mode"] == "compare":
    for case in spec["cases"]:
      compare(case)
  else:
    memory(spec)


if __name__ == "__main__":
  main()
