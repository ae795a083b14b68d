"""Eval on a mesh: parameters sharded, every batch a global array with rows over data x fsdp.

The sharded runs happen in a subprocess with 4 CPU devices (the device count is fixed when jax
starts); they are compared with the same model on one device, with no mesh.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from flanjax import partitioning
from tests.train.helpers import cpu_env, free_port

_SHARDED = r"""
import json

import jax
import numpy as np

from flanjax import partitioning
from flanjax.eval import rank
from flanjax.model.config import T5Config
from flanjax.model.hf import T5Model

assert jax.device_count() == 4
config = T5Config.tiny(vocab_size=64, d_model=32, d_ff=64, num_layers=2, num_heads=4)
model = T5Model.init(config, seed=3)
rng = np.random.default_rng(0)
inputs = [[int(t) for t in rng.integers(2, 64, int(rng.integers(3, 12)))] + [1] for _ in range(7)]
options = [
  [[int(t) for t in rng.integers(2, 64, int(rng.integers(1, 5)))] + [1] for _ in range(k)]
  for k in (2, 3, 2, 1, 3, 2, 3)
]
prompts = rank.pad_rows(inputs, 16)  # [7, 16]

placed = []  # (rows, rows per device) of every batch fed to a sharded program
real_place = partitioning.place_batch


def recording_place(value, mesh):
  array = real_place(value, mesh)
  if mesh is not None:  # without a mesh the batch stays a host array
    placed.append((array.shape[0], array.sharding.shard_shape(array.shape)[0]))
  return array


partitioning.place_batch = recording_place


def run(m):
  scored = rank.rank_classify(m, inputs, options, batch_size=3, length_normalize=True)
  return {
    "scores": np.where(np.isfinite(scored.scores), scored.scores, -1.0).tolist(),
    "choices": scored.choices.tolist(),
    "greedy": m.generate(prompts, max_new_tokens=6).tolist(),
    "beam": m.generate(prompts, max_new_tokens=6, num_beams=3).tolist(),
  }


out = {"one_device": run(model)}
assert not placed  # no mesh: nothing placed over devices
for name, mesh_config in {
  "data2_fsdp2": partitioning.MeshConfig(data=2, fsdp=2, model=1),
  "fsdp2_model2": partitioning.MeshConfig(data=1, fsdp=2, model=2),
}.items():
  placed.clear()
  sharded = model.on_mesh(partitioning.make_mesh(mesh_config))
  q = sharded.params["encoder_layers_0"]["attention"]["q"]  # [embed, heads, kv]
  out[name] = run(sharded)
  out[name]["q_spec"] = [str(axis) for axis in q.sharding.spec]
  out[name]["q_devices"] = len(q.sharding.device_set)
  out[name]["placed"] = placed[:]

flash = model.on_mesh(partitioning.make_mesh(partitioning.MeshConfig(data=1, fsdp=2, model=2)))
flash.config = config.replace(attention="flash")
scored = rank.rank_classify(flash, inputs, options, batch_size=3, length_normalize=True)
out["flash_fsdp2_model2"] = np.where(np.isfinite(scored.scores), scored.scores, -1.0).tolist()

# Beam search on 4 batch shards: each row's beams reorder their key/value caches within the row,
# so the compiled program never all-gathers a cache ([batch * beams, heads, length, d_kv]).
import re

from flanjax.model import decode

on4 = model.on_mesh(partitioning.make_mesh(partitioning.MeshConfig(data=4, fsdp=1, model=1)))
ids = partitioning.place_batch(np.ones((8, 16), np.int32), on4.mesh)
with partitioning.active(on4.mesh):
  hlo = decode._decode.lower(
    on4.params, ids, ids, np.int32(6), np.float32(1), np.float32(1), jax.random.PRNGKey(0),
    config=config, cache_len=8, num_beams=3, do_sample=False, top_k=0,
  ).compile().as_text()
out["beam_all_gathers"] = re.findall(r"= (\S+) all-gather", hlo)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded_runs():
  run = subprocess.run(
    [sys.executable, "-c", _SHARDED], env=cpu_env(4), capture_output=True, text=True, timeout=600
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
  return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("mesh", ["data2_fsdp2", "fsdp2_model2"])
def test_sharded_scores_and_generations_equal_one_devices(sharded_runs, mesh):
  one, sharded = sharded_runs["one_device"], sharded_runs[mesh]
  np.testing.assert_allclose(sharded["scores"], one["scores"], rtol=1e-5, atol=1e-5)
  assert sharded["choices"] == one["choices"]
  assert sharded["greedy"] == one["greedy"]
  assert sharded["beam"] == one["beam"]


@pytest.mark.parametrize("mesh", ["data2_fsdp2", "fsdp2_model2"])
def test_every_batch_is_split_over_the_batch_shards(sharded_runs, mesh):
  shards = 4 if mesh == "data2_fsdp2" else 2
  placed = sharded_runs[mesh]["placed"]
  # Rank: 7 inputs at batch_size 3 -> rows rounded up to a multiple of the shards, each batch
  # placed twice (inputs, options); generate: 7 prompts -> 8 rows (ids and mask), twice.
  rank_rows = partitioning.padded_rows(3, _FakeMesh(shards))
  expected_rank = [(rank_rows, rank_rows // shards)] * 2 * -(-7 // rank_rows)
  assert placed == [list(x) for x in expected_rank] + [[8, 8 // shards]] * 4


def test_parameters_are_sharded_not_copied(sharded_runs):
  # q is [embed, heads, kv]: embed over fsdp, heads over model (when there is one).
  assert sharded_runs["data2_fsdp2"]["q_spec"][:1] == ["fsdp"]
  assert sharded_runs["fsdp2_model2"]["q_spec"][:2] == ["fsdp", "model"]
  assert sharded_runs["fsdp2_model2"]["q_devices"] == 4


def test_flash_attention_scores_on_a_mesh_equal_xla_on_one_device(sharded_runs):
  np.testing.assert_allclose(
    sharded_runs["flash_fsdp2_model2"], sharded_runs["one_device"]["scores"], rtol=1e-5, atol=1e-5
  )


class _FakeMesh:
  """Just the mesh shape `padded_rows` reads."""

  def __init__(self, batch_shards: int):
    self.shape = {"data": 1, "fsdp": batch_shards, "model": 1}


def test_beam_search_never_gathers_a_cache_across_batch_shards(sharded_runs):
  gathered = sharded_runs["beam_all_gathers"]
  # "f32[24,4,8,16]{3,2,1,0}": a rank-4 array (the caches' rank) has 3 commas in its dims.
  caches = [shape for shape in gathered if shape.split("]")[0].count(",") == 3]
  assert gathered  # the parse works: the top-k over [rows, beams x vocab] is gathered
  assert not caches, gathered


def test_padded_rows_rounds_up_to_the_batch_shards():
  assert partitioning.padded_rows(3, None) == 3
  assert partitioning.padded_rows(3, _FakeMesh(4)) == 4
  assert partitioning.padded_rows(8, _FakeMesh(4)) == 8
  assert partitioning.padded_rows(9, _FakeMesh(6)) == 12


_DISAGREE = r"""
import json
import sys

from flanjax.train import distributed

distributed.initialize_from_env()
import jax
import numpy as np

from flanjax.config import EvalConfig
from flanjax.eval import evaluate
from flanjax.eval.tasks import EvalExample, EvalTask
from flanjax.model.config import T5Config
from flanjax.model.hf import T5Model


class Vocabulary:
  eos_id = 1
  vocab_size = 32

  def encode(self, text):
    return [3 + (hash(word) % 20) for word in text.split()]

  def decode(self, ids):
    return " ".join(str(i) for i in ids)


me = jax.process_index()
if "--crash" in sys.argv and me == 1:
  from flanjax.eval import rank

  def out_of_memory(*args, **kwargs):
    raise RuntimeError("RESOURCE_EXHAUSTED: out of memory on process 1")

  rank.rank_classify = out_of_memory


def task(name, differs=False, raises=False):
  def load(split, max_examples):
    if raises and me == 1:
      raise OSError("disk gone")
    rows = [(5, 6, 7, 1), (8, 9, 1), (10, 11, 12, 13, 1)]
    if differs and me == 1:
      rows = rows[:2]  # process 1 read a shorter file
    return [
      EvalExample(ids, "yes", "0", options=("yes", "no"), input_text="x") for ids in rows
    ]

  return EvalTask(name, "qa", ("accuracy",), ("test",), load, Vocabulary())


config = T5Config.tiny(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
report = evaluate.evaluate(
  T5Model.init(config),
  [task("same"), task("differs", differs=True), task("broken", raises=True), task("after")],
  EvalConfig(split="test", batch_size=2, input_length=16, target_length=8),
)
errors = {name: t["error"] for name, t in report["tasks"].items()}
print("RESULT " + json.dumps(errors))
"""


def _two_processes(*flags: str) -> list[tuple[int, str]]:
  """Runs _DISAGREE as processes 0 and 1 of one jax.distributed run: [(exit code, output)]."""
  port = free_port()
  procs = []
  for index in range(2):
    env = cpu_env(1, process_id=index, num_processes=2, port=port)
    procs.append(
      subprocess.Popen(
        [sys.executable, "-c", _DISAGREE, *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    )
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=180)[0])
  finally:
    for proc in procs:
      proc.kill()
  return [(proc.returncode, output) for proc, output in zip(procs, outputs, strict=True)]


def test_processes_that_load_different_examples_fail_that_task_and_go_on():
  """Process 1 reads fewer rows for one task and fails to read another: every process records
  both tasks as failed with the reason (instead of waiting forever in a collective) and scores
  the tasks before and after."""
  runs = _two_processes()
  for code, output in runs:
    assert code == 0, output[-3000:]
  for _, output in runs:
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    errors = json.loads(line[len("RESULT ") :])
    assert errors["same"] is None and errors["after"] is None
    assert "did not load the same eval examples" in errors["differs"]
    assert "test 3 examples" in errors["differs"] and "test 2 examples" in errors["differs"]
    assert "disk gone" in errors["broken"]


def test_a_model_call_failing_in_one_process_ends_every_process():
  """Process 1's scoring raises (an out-of-memory, say) while process 0 is inside the same batch:
  both end with a non-zero code within the timeout, process 1 with its error; nothing hangs."""
  (code0, output0), (code1, output1) = _two_processes("--crash")
  assert code1 != 0 and "RESOURCE_EXHAUSTED: out of memory on process 1" in output1, output1[-3000:]
  assert code0 != 0, output0[-3000:]
  assert "RESULT " not in output0 + output1
