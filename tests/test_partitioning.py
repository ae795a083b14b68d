"""Mesh construction, the logical->mesh rule table and sharding derivation."""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from flanjax import partitioning
from flanjax.partitioning import MeshConfig


def test_mesh_config_fills_the_free_axis():
  assert MeshConfig(data=2, fsdp=-1, model=2).resolve(8) == (2, 2, 2)
  assert MeshConfig(data=-1, fsdp=1, model=1).resolve(4) == (4, 1, 1)
  assert MeshConfig(data=1, fsdp=4, model=2).resolve(8) == (1, 4, 2)


@pytest.mark.parametrize(
  "config, message",
  [
    (MeshConfig(data=1, fsdp=3, model=-1), r"mesh.*multiply to 3.*does not divide 8 devices"),
    (MeshConfig(data=-1, fsdp=-1, model=1), r"mesh.data and mesh.fsdp are both -1"),
    (MeshConfig(data=2, fsdp=2, model=1), r"needs 4 devices but 8"),
    (MeshConfig(data=0, fsdp=-1, model=1), r"mesh.data=0"),
  ],
)
def test_mesh_config_errors_name_the_key(config, message):
  with pytest.raises(ValueError, match=message):
    config.resolve(8)


def test_rule_table_shards_params_fsdp_and_tensor_parallel():
  spec = partitioning.logical_to_mesh_spec
  assert spec(PartitionSpec("vocab", "embed")) == PartitionSpec("model", "fsdp")
  assert spec(PartitionSpec("embed", "mlp")) == PartitionSpec("fsdp", "model")
  assert spec(PartitionSpec("embed", "heads", "kv")) == PartitionSpec("fsdp", "model", None)
  assert spec(PartitionSpec("relpos_buckets", "heads")) == PartitionSpec(None, "model")
  # Activations: the batch takes data x fsdp, so embed falls back to unsharded.
  assert spec(PartitionSpec("batch", "length", "embed")) == PartitionSpec(
    ("data", "fsdp"), None, None
  )
  assert spec(PartitionSpec("batch", "length", "vocab")) == PartitionSpec(
    ("data", "fsdp"), None, "model"
  )


def test_fit_spec_drops_axes_that_do_not_divide():
  mesh = AbstractMesh((2, 4, 2), ("data", "fsdp", "model"))
  fit = partitioning.fit_spec_to_shape
  assert fit(PartitionSpec("model", "fsdp"), (10, 64), mesh) == PartitionSpec("model", "fsdp")
  assert fit(PartitionSpec("model", "fsdp"), (9, 6), mesh) == PartitionSpec(None, None)
  assert fit(PartitionSpec(("data", "fsdp")), (6, 3), mesh) == PartitionSpec("data", None)
  assert fit(PartitionSpec(("data", "fsdp")), (16,), mesh) == PartitionSpec(("data", "fsdp"))


def test_optimizer_state_shardings_follow_their_parameters():
  mesh = partitioning.make_mesh(MeshConfig(data=1, fsdp=1, model=1), jax.devices()[:1])
  params = {
    "dense": {"kernel": np.zeros((256, 512), np.float32)},
    "norm": {"scale": np.zeros((256,), np.float32)},
  }
  logical = {
    "dense": {"kernel": PartitionSpec("embed", "mlp")},
    "norm": {"scale": PartitionSpec("embed")},
  }
  abstract_params = jax.eval_shape(lambda: params)
  param_shardings = partitioning.param_shardings(logical, abstract_params, mesh)
  assert param_shardings["dense"]["kernel"].spec == PartitionSpec("fsdp", "model")
  opt_state = jax.eval_shape(optax.adafactor(1e-3, min_dim_size_to_factor=128).init, params)
  shardings = partitioning.derived_state_shardings(
    opt_state, abstract_params, param_shardings, mesh
  )
  flat = {
    jax.tree_util.keystr(path): (leaf.shape, sharding.spec)
    for (path, leaf), sharding in zip(
      jax.tree_util.tree_flatten_with_path(opt_state)[0],
      jax.tree_util.tree_leaves(shardings),
      strict=True,
    )
  }
  kernel_stat = lambda stat: next(
    value for path, value in flat.items() if path.endswith(f".{stat}['dense']['kernel']")
  )
  # Factored statistics of the [256, 512] kernel keep the sharding of the dimension they keep.
  assert kernel_stat("v_row") == ((256,), PartitionSpec("fsdp"))
  assert kernel_stat("v_col") == ((512,), PartitionSpec("model"))
  counts = [value for path, value in flat.items() if path.endswith(".count")]
  assert counts and all(value == ((), PartitionSpec()) for value in counts)


def test_global_batch_keeps_rows_and_shards_them():
  mesh = partitioning.make_mesh(MeshConfig(data=1, fsdp=-1, model=1))
  rows = 2 * mesh.shape["fsdp"]
  local = {"encoder_input_tokens": np.arange(rows * 3, dtype=np.int32).reshape(rows, 3)}
  batch = partitioning.make_global_batch(local, mesh)
  np.testing.assert_array_equal(
    np.asarray(batch["encoder_input_tokens"]), local["encoder_input_tokens"]
  )
  assert batch["encoder_input_tokens"].sharding.spec == PartitionSpec(("data", "fsdp"))
