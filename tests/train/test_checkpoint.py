"""Nothing lost: corrupt checkpoints are detected, moved aside and fallen back from; rotation keeps
the last good one; skip streaks, Ctrl-C, a deleted checkpoint directory and old metrics."""

import logging
import math
import os
import pathlib
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanjax.train import checkpoint, loop, state
from flanjax.train.checkpoint import Checkpointer, CorruptCheckpointError
from flanjax.train.synthetic import SyntheticTask
from tests.train.helpers import read_metrics, run_config, tiny_config


def _data(config):
  return SyntheticTask(
    batch_size=config.train.batch_size,
    input_length=config.lengths.inputs,
    target_length=config.lengths.targets,
    vocab_size=config.model.vocab_size,
    max_tokens=12,
  )


class _Hook:
  """Synthetic stream that calls `hook(position, batch)` before handing out each batch."""

  def __init__(self, inner, hook):
    self.inner, self.hook = inner, hook

  def __iter__(self):
    return self

  def __next__(self):
    position = self.inner.get_state()["position"]
    batch = next(self.inner)
    self.hook(position, batch)
    return batch

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def _nan_from(index):
  def hook(position, batch):
    if position >= index:
      batch["decoder_loss_weights"] = np.full_like(batch["decoder_loss_weights"], np.nan)

  return hook


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir trained 4 steps with checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("trained")
  config = tiny_config(steps=4, checkpoint_every=2)
  loop.train(run_config(config), workdir, _data(config))
  return workdir


def _copy(trained, tmp_path) -> pathlib.Path:
  shutil.copytree(trained, tmp_path / "run")
  return tmp_path / "run"


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _damage(step_dir: pathlib.Path, how: str) -> pathlib.Path:
  if how == "empty_extra":
    target = step_dir / "extra" / "metadata"
    target.write_text("")
    return target
  target = _largest_data_file(step_dir)
  data = bytearray(target.read_bytes())
  if how == "flip":
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(b ^ 0xFF for b in data[middle : middle + 256])
  else:  # truncate
    data = data[: len(data) // 2]
  target.write_bytes(bytes(data))
  return target


@pytest.mark.parametrize("how", ["flip", "truncate", "empty_extra"])
def test_a_damaged_latest_checkpoint_is_moved_aside_and_training_resumes_from_the_previous(
  trained, tmp_path, how, caplog
):
  workdir = _copy(trained, tmp_path)
  _damage(workdir / "checkpoints" / "4", how)
  config = tiny_config(steps=6, checkpoint_every=2)
  with caplog.at_level(logging.WARNING):
    result = loop.train(run_config(config), workdir, _data(config))
  assert result["step"] == 6 and math.isfinite(result["loss"])
  assert len(list((workdir / "checkpoints").glob("4.corrupt-*"))) == 1
  assert Checkpointer(workdir / "checkpoints", keep=3).all_steps() == [2, 4, 6]
  assert sorted(read_metrics(workdir)) == list(range(1, 7))  # steps 3, 4 recomputed once
  loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert any("CORRUPT CHECKPOINT" in m and "checkpoints/4" in m for m in loud), loud


def test_an_explicit_corrupt_step_fails_in_one_line_and_latest_falls_back(trained, tmp_path):
  rc = run_config(tiny_config(steps=4))
  workdir = _copy(trained, tmp_path)
  _damage(workdir / "checkpoints" / "4", "flip")
  shutil.copytree(workdir, tmp_path / "copy")
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/4/state") as caught:
    state.restore_params(workdir, 4, rc)
  assert "\n" not in str(caught.value) and "4.corrupt-" in str(caught.value)
  params, step = state.restore_params(tmp_path / "copy", None, rc)
  assert step == 2 and all(np.isfinite(v).all() for v in jax.tree.leaves(params))
  assert list((tmp_path / "copy" / "checkpoints").glob("4.corrupt-*"))


def test_non_finite_arrays_and_changed_values_do_not_verify(tmp_path):
  ckpt = Checkpointer(tmp_path / "checkpoints", keep=2, async_save=False)
  good = {"w": jnp.arange(6.0).reshape(2, 3)}
  ckpt.save(1, good, extra={"consecutive_skips": 0})
  ckpt.save(2, {"w": good["w"].at[0, 1].set(jnp.nan)}, extra={"consecutive_skips": 0})
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), good)
  np.testing.assert_array_equal(ckpt.restore_state(1, target)["w"], good["w"])
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/2/state holds NaN/Inf.*'w'"):
    ckpt.restore_state(2, target)
  assert ckpt.newest_good_step() == 1  # the NaN one is not "good": rotation protects step 1
  ckpt.close()
  swapped = good["w"].at[0, 0].set(1.0).at[0, 1].set(0.0)
  nudged = good["w"].at[1, 2].set(np.nextafter(np.float32(5), np.float32(6)))
  table = checkpoint.fingerprints(good)[0]
  assert checkpoint.fingerprints({"w": swapped})[0] != table
  assert checkpoint.fingerprints({"w": nudged})[0] != table


def test_skip_streak_stops_without_saving_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_config(
    steps=20, checkpoint_every=2, keep_checkpoints=1, max_consecutive_skips=3, non_finite="skip"
  )
  data = _Hook(_data(config), _nan_from(2))  # steps 3, 4, 5, ... are non-finite
  with pytest.raises(loop.NonFiniteLossError) as caught:
    loop.train(run_config(config), tmp_path, data)
  message = str(caught.value)
  assert "config.train.max_consecutive_skips=3" in message and "steps 3-5" in message
  assert f"last good checkpoint is {tmp_path.absolute()}/checkpoints/2" in message
  # keep_checkpoints=1 keeps step 4 (mid-streak), and step 2, the last good one, beyond it.
  assert Checkpointer(tmp_path / "checkpoints", keep=1).all_steps() == [2, 4]


def test_rotation_never_keeps_only_checkpoints_from_a_skip_streak(tmp_path):
  config = tiny_config(
    steps=6, checkpoint_every=1, keep_checkpoints=2, max_consecutive_skips=0, non_finite="skip"
  )
  result = loop.train(run_config(config), tmp_path, _Hook(_data(config), _nan_from(2)))
  assert result["step"] == 6 and result["non_finite_skips"] == 4
  ckpt = Checkpointer(tmp_path / "checkpoints", keep=2)
  assert ckpt.all_steps() == [2, 5, 6]
  assert [ckpt.read_extra(s)["consecutive_skips"] for s in (2, 5, 6)] == [0, 3, 4]


def test_a_fresh_start_moves_an_old_metrics_file_aside(tmp_path):
  old = '{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n'
  (tmp_path / "metrics.jsonl").write_text(old)
  config = tiny_config(steps=2)
  loop.train(run_config(config), tmp_path, _data(config))
  assert sorted(read_metrics(tmp_path)) == [1, 2]
  [aside] = tmp_path.glob("metrics.jsonl.old-*")
  assert aside.read_text() == old


def _interrupt_at(index, times=1):
  def hook(position, batch):
    if position == index:
      for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)

  return hook


def test_ctrl_c_saves_a_checkpoint_and_reports_sigint(tmp_path):
  config = tiny_config(steps=50)
  before = signal.getsignal(signal.SIGINT)  # pytest's (SIG_IGN when run as a background job)
  result = loop.train(run_config(config), tmp_path, _Hook(_data(config), _interrupt_at(2)))
  assert result["preempted"] and result["signal"] == "SIGINT" and result["step"] == 3
  assert Checkpointer(tmp_path / "checkpoints", keep=3).all_steps() == [3]
  assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path):
  config = tiny_config(steps=50)
  with pytest.raises(KeyboardInterrupt, match="second Ctrl-C"):
    loop.train(run_config(config), tmp_path, _Hook(_data(config), _interrupt_at(2, times=2)))
  assert Checkpointer(tmp_path / "checkpoints", keep=3).all_steps() == []


def test_a_deleted_checkpoint_directory_fails_the_next_save_clearly(tmp_path):
  checkpoints = tmp_path / "checkpoints"

  def remove_checkpoints(position, batch):
    if position == 3:  # checkpoint 2 is being written: wait for it, then `rm -rf checkpoints/`
      deadline = time.time() + 60
      while not (checkpoints / "2" / "_CHECKPOINT_METADATA").exists() and time.time() < deadline:
        time.sleep(0.05)
      shutil.rmtree(checkpoints)

  config = tiny_config(steps=6, checkpoint_every=2)
  with pytest.raises(checkpoint.CheckpointDirectoryError, match=r"checkpoints vanished.*step 4"):
    loop.train(run_config(config), tmp_path, _Hook(_data(config), remove_checkpoints))
