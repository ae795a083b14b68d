"""`load_sharded_params`: equal to `hf.load_pretrained`, placed shard by shard; errors name the
file and tensor; with 2 processes each one's peak memory stays well below the checkpoint's size."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from flanjax import partitioning
from flanjax.model import hf, hf_sharded, t5
from flanjax.model.config import T5Config
from tests.train.helpers import cpu_env, free_port

WORKER = pathlib.Path(__file__).with_name("hf_sharded_worker.py")
# v1.1 / FLAN-T5 style (untied head, gated MLP, d_kv unrelated to d_model / heads).
GATED = T5Config.tiny(vocab_size=100, d_model=32, d_kv=6, d_ff=48, num_layers=3, num_heads=4)
GATED = GATED.replace(num_decoder_layers=2)
# v1.0 style (tied head, relu MLP).
RELU = T5Config.tiny(
  vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4
).replace(feed_forward_proj="relu", tie_word_embeddings=True)
# ~220 MB of float32 for the memory test: no tensor above 16% of it.
BIG = T5Config(
  vocab_size=8192,
  d_model=1024,
  d_kv=64,
  d_ff=2560,
  num_layers=2,
  num_decoder_layers=2,
  num_heads=16,
  feed_forward_proj="relu",
  tie_word_embeddings=True,
)


def _save(config: T5Config, directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
  hf.save_pretrained(hf.T5Model.init(config, seed=seed), directory)
  return directory


def _split_in_two(directory: pathlib.Path) -> None:
  """model.safetensors → two files + model.safetensors.index.json, as large HF checkpoints."""
  path = directory / hf.SAFETENSORS_FILE
  tensors = load_file(path)
  names = sorted(tensors)
  weight_map = {}
  for part, chunk in enumerate((names[::2], names[1::2])):
    file = f"model-{part + 1:05d}-of-00002.safetensors"
    save_file({n: tensors[n] for n in chunk}, directory / file, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(chunk, file))
  index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}}
  (directory / hf.SAFETENSORS_INDEX).write_text(json.dumps(dict(index, weight_map=weight_map)))
  path.unlink()


def _rewrite(directory: pathlib.Path, change) -> None:
  path = directory / hf.SAFETENSORS_FILE
  tensors = load_file(path)
  change(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def _start(spec: dict, *, devices: int, process_id=None, num_processes=1, port=None):
  env = cpu_env(devices, process_id, num_processes, port)
  return subprocess.Popen(
    [sys.executable, str(WORKER), json.dumps(spec)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(proc, timeout=120) -> str:
  try:
    output, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    output, _ = proc.communicate()
  assert proc.returncode == 0, output[-4000:]
  return output


def _one_device_shardings(config: T5Config):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(), devices=jax.devices()[:1])
  abstract = t5.abstract_params(config)
  return partitioning.param_shardings(t5.param_logical_axes(config), abstract, mesh)


# ------------------------------------------------------------------ equality with load_pretrained
def test_four_devices_equal_load_pretrained_bitwise(tmp_path):
  gated, relu = _save(GATED, tmp_path / "gated"), _save(RELU, tmp_path / "relu", seed=1)
  _split_in_two(gated)  # a 2-file safetensors index
  tied_head = _save(GATED, tmp_path / "tied_head", seed=2)  # untied config, head saved tied
  _rewrite(tied_head, lambda tensors: tensors.pop("lm_head.weight"))
  cases = [
    dict(dir=str(gated), scan=False, mesh=[1, 4, 1]),
    dict(dir=str(gated), scan=True, mesh=[1, 4, 1]),
    dict(dir=str(gated), scan=False, mesh=[1, 2, 2]),  # heads / mlp / vocab split too
    dict(dir=str(gated), scan=True, mesh=[2, 1, 2]),  # replicas over data
    dict(dir=str(relu), scan=False, mesh=[1, 2, 2]),
    dict(dir=str(relu), scan=True, mesh=[1, 4, 1], dtype="bfloat16"),
    dict(dir=str(tied_head), scan=False, mesh=[1, 4, 1]),
  ]
  output = _finish(_start({"mode": "compare", "cases": cases}, devices=4))
  oks = [line for line in output.splitlines() if line.startswith("ok ")]
  assert len(oks) == len(cases), output[-4000:]
  assert all(" 0 split)" not in line for line in oks), oks  # every case really split params


def test_pytorch_bin_is_loaded_on_one_device(tmp_path):
  torch = pytest.importorskip("torch")
  directory = _save(GATED, tmp_path / "bin")
  tensors = load_file(directory / hf.SAFETENSORS_FILE)
  torch.save({n: torch.from_numpy(t) for n, t in tensors.items()}, directory / hf.TORCH_FILE)
  (directory / hf.SAFETENSORS_FILE).unlink()
  expected = hf.load_pretrained(directory, scan_layers=True)
  loaded = hf_sharded.load_sharded_params(
    directory, expected.config, _one_device_shardings(expected.config)
  )
  for want, got in zip(jax.tree.leaves(expected.params), jax.tree.leaves(loaded), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
  "change, message",
  [
    (
      lambda t: t.pop("encoder.block.1.layer.0.SelfAttention.q.weight"),
      r"tensor 'encoder\.block\.1\.layer\.0\.SelfAttention\.q\.weight' is missing from the "
      r"checkpoint \(needed for parameter encoder_layers_1/attention/q\)",
    ),
    (
      lambda t: t.update(
        {"decoder.block.0.layer.2.DenseReluDense.wo.weight": np.zeros((32, 47), np.float32)}
      ),
      r"model\.safetensors: tensor 'decoder\.block\.0\.layer\.2\.DenseReluDense\.wo\.weight' has "
      r"shape \[32, 47\], but config\.json implies \[32, 48\]",
    ),
  ],
  ids=["missing", "shape"],
)
def test_bad_tensors_get_the_messages_of_load_pretrained(tmp_path, change, message):
  directory = _save(GATED, tmp_path / "bad")
  _rewrite(directory, change)
  with pytest.raises(hf.CheckpointError, match=message):
    hf.load_pretrained(directory)
  with pytest.raises(hf.CheckpointError, match=message):
    hf_sharded.load_sharded_params(directory, GATED, _one_device_shardings(GATED))


@pytest.mark.parametrize(
  "damage, message",
  [
    (lambda data: data[: len(data) - 100], r"is truncated: tensor '.*' ends at byte \d+"),
    (lambda data: data[:5], r"is truncated or not safetensors: 5 bytes"),
    (lambda data: data[:8] + b"#" + data[9:], r"is corrupt: its safetensors header is not JSON"),
  ],
  ids=["truncated", "no-header", "corrupt-header"],
)
def test_damaged_file_is_one_line_naming_it(tmp_path, damage, message):
  directory = _save(GATED, tmp_path / "damaged")
  path = directory / hf.SAFETENSORS_FILE
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(hf.CheckpointError, match=message) as error:
    hf_sharded.load_sharded_params(directory, GATED, _one_device_shardings(GATED))
  assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_other_model_shape_or_tree_is_refused(tmp_path):
  directory = _save(GATED, tmp_path / "gated")
  wider = GATED.replace(d_ff=64)
  with pytest.raises(hf.CheckpointError, match=r"config\.json describes .*'d_ff': \(48, 64\)"):
    hf_sharded.load_sharded_params(directory, wider, _one_device_shardings(wider))
  scanned = GATED.replace(scan_layers=True)
  with pytest.raises(ValueError, match="shardings do not match .*scan_layers=True"):
    hf_sharded.load_sharded_params(directory, scanned, _one_device_shardings(GATED))


# ------------------------------------------------------------------ memory with 2 processes
def _write_big_checkpoint(directory: pathlib.Path) -> int:
  """A random ~220 MB float32 T5 written with safetensors directly; returns its size in bytes."""
  directory.mkdir()
  shapes = t5.abstract_params(BIG)
  rng = np.random.default_rng(0)
  tensors = {}
  for hf_name, path, kind in hf.rename_table(BIG):
    shape = hf._hf_shape(hf._get_path(shapes, path).shape, kind)
    tensors[hf_name] = rng.standard_normal(shape, dtype=np.float32)
  save_file(tensors, directory / hf.SAFETENSORS_FILE, metadata={"format": "pt"})
  (directory / hf.CONFIG_FILE).write_text(json.dumps(BIG.to_hf_config()))
  return (directory / hf.SAFETENSORS_FILE).stat().st_size


@pytest.mark.slow
def test_two_processes_each_hold_about_half_the_checkpoint(tmp_path):
  size = _write_big_checkpoint(tmp_path / "big")
  assert size > 200e6
  port = free_port()
  spec = {"mode": "memory", "dir": str(tmp_path / "big"), "mesh": [1, 4, 1]}
  workers = [
    _start(dict(spec, out=str(tmp_path / f"new{i}.json")), devices=2, **kw)
    for i, kw in enumerate(dict(process_id=i, num_processes=2, port=port) for i in range(2))
  ]
  for worker in workers:
    _finish(worker, timeout=240)
  old = _start(dict(spec, out=str(tmp_path / "old.json"), old=True), devices=1)
  _finish(old, timeout=240)
  new = [json.loads((tmp_path / f"new{i}.json").read_text()) for i in range(2)]
  old = json.loads((tmp_path / "old.json").read_text())
  mb = 1024 / 1e6  # kB → MB
  print(f"\ncheckpoint: {size / 1e6:.1f} MB")
  print(
    f"old path, hf.load_pretrained on 1 process: peak RSS growth {old['growth_kb'] * mb:.1f} MB "
    f"({old['growth_kb'] * 1024 / size:.0%})"
  )
  for result in new:
    print(
      f"load_sharded_params, process {result['process']} of 2 (fsdp=4): peak RSS growth "
      f"{result['growth_kb'] * mb:.1f} MB ({result['growth_kb'] * 1024 / size:.0%}); its shards "
      f"{result['local_shard_bytes'] / 1e6:.1f} MB; {result['checked_shards']} shards checked"
    )
  for result in new:
    assert result["local_shard_bytes"] < 0.51 * size
    assert result["growth_kb"] * 1024 < 0.6 * size, result
