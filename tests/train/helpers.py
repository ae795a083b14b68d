"""Shared helpers of the training tests (tiny configs, metrics, subprocess plumbing)."""

import json
import os
import pathlib
import socket

import ml_collections

from flanjax.config import RunConfig


def tiny_config(**train_overrides) -> ml_collections.ConfigDict:
  """The contract's config keys with a ~30k-parameter T5 (d_model 32, one layer each side)."""
  train = dict(
    steps=6,
    batch_size=8,
    log_every=1,
    checkpoint_every=0,
    keep_checkpoints=3,
    eval_every=0,
    peak_flops_per_device=1e9,
    z_loss=0.0,  # the tests compare losses with plain cross-entropy
  )
  train.update(train_overrides)
  return ml_collections.ConfigDict(
    dict(
      seed=0,
      data_dir="",
      init_from="",
      mixture="synthetic",
      eval_mixtures=[],
      model=dict(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
      ),
      lengths=dict(inputs=16, targets=16),
      train=train,
      optimizer=dict(name="adafactor", learning_rate=1e-2, schedule="constant"),
      mesh=dict(data=1, fsdp=-1, model=1),
    )
  )


def run_config(config: ml_collections.ConfigDict) -> RunConfig:
  """The typed RunConfig of a test's ConfigDict (through the one config reader)."""
  return RunConfig.from_config_dict(config)


def read_metrics(workdir) -> dict[int, dict]:
  """metrics.jsonl as {step: record} (training records only)."""
  records = {}
  for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "loss" in record:
      records[record["step"]] = record
  return records


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def finish(proc, timeout=240) -> tuple[int, str]:
  output, _ = proc.communicate(timeout=timeout)
  return proc.returncode, output


REPO = pathlib.Path(__file__).resolve().parents[2]


def cpu_env(devices: int, process_id=None, num_processes: int = 1, port=None, **extra) -> dict:
  """The environment of a subprocess with `devices` CPU devices that imports this checkout; with
  `process_id`, process `process_id` of `num_processes` wired to a coordinator on `port`."""
  env = dict(os.environ)
  env.update(
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    **extra,
  )
  for key in ("FLANJAX_COORDINATOR", "FLANJAX_NUM_PROCESSES", "FLANJAX_PROCESS_ID"):
    env.pop(key, None)
  if process_id is not None:
    env.update(
      FLANJAX_COORDINATOR=f"127.0.0.1:{port}",
      FLANJAX_NUM_PROCESSES=str(num_processes),
      FLANJAX_PROCESS_ID=str(process_id),
    )
  return env
