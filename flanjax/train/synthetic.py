"""Synthetic encoder-decoder batches (no TensorFlow): a resumable toy task for tests and benchmarks.

Tasks (token ids: 0 pad, 1 EOS, data tokens drawn uniformly from [2, vocab_size)):
  * "reverse": inputs `x1 .. xn EOS`, targets `xn .. x1 EOS`;
  * "copy":    inputs `x1 .. xn EOS`, targets `x1 .. xn EOS`.
Lengths n are uniform in [min_tokens, max_tokens]; `full=True` fills every input and target
position instead (no padding: the benchmark shape).

Batches use seqio's EncDecFeatureConverter keys. Batch k is a pure function of (seed, k), so the
stream is resumable from `get_state()` alone, and each process takes its own contiguous rows of
the same global batch.

Example (reverse, vocab 16, one row of inputs length 5 / targets length 5):
  encoder_input_tokens   [7, 3, 9, 1, 0]
  decoder_target_tokens  [9, 3, 7, 1, 0]
  decoder_input_tokens   [0, 9, 3, 7, 1]
  decoder_loss_weights   [1., 1., 1., 1., 0.]
"""

from __future__ import annotations

from typing import Any

import numpy as np

TASKS = ("reverse", "copy")


class SyntheticTask:
  """Resumable iterator over per-process batches of a toy seq2seq task."""

  def __init__(
    self,
    *,
    batch_size: int,
    input_length: int,
    target_length: int,
    vocab_size: int,
    task: str = "reverse",
    seed: int = 0,
    min_tokens: int = 1,
    max_tokens: int | None = None,
    full: bool = False,
    process_index: int = 0,
    process_count: int = 1,
  ):
    if task not in TASKS:
      raise ValueError(f"synthetic task {task!r} is not one of {TASKS}")
    if batch_size % process_count:
      raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    if vocab_size < 3:
      raise ValueError(f"vocab_size={vocab_size} leaves no data tokens (0 = pad, 1 = EOS)")
    self.batch_size = batch_size
    self.input_length = input_length
    self.target_length = target_length
    self.vocab_size = vocab_size
    self.task = task
    self.seed = seed
    longest = min(input_length, target_length) - 1
    self.max_tokens = longest if max_tokens is None else min(max_tokens, longest)
    self.min_tokens = max(1, min(min_tokens, self.max_tokens))
    self.full = full
    self.local_rows = slice(
      process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count
    )
    self._position = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.global_batch(self._position)
    self._position += 1
    return {name: value[self.local_rows] for name, value in batch.items()}

  def get_state(self) -> dict[str, Any]:
    return {"position": self._position, "seed": self.seed}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("seed") != self.seed:
      raise ValueError(f"data state was saved with seed {state.get('seed')}, not {self.seed}")
    self._position = int(state["position"])

  def global_batch(self, index: int) -> dict[str, np.ndarray]:
    """The full batch number `index` (every process's rows)."""
    rng = np.random.default_rng([self.seed, index])
    inputs = np.zeros((self.batch_size, self.input_length), np.int32)  # [batch, input_length]
    targets = np.zeros((self.batch_size, self.target_length), np.int32)  # [batch, target_length]
    for row in range(self.batch_size):
      if self.full:
        sequence = rng.integers(2, self.vocab_size, size=self.input_length - 1)
        target = sequence[: self.target_length - 1]
      else:
        length = int(rng.integers(self.min_tokens, self.max_tokens + 1))
        sequence = rng.integers(2, self.vocab_size, size=length)
        target = sequence[::-1] if self.task == "reverse" else sequence
      inputs[row, : len(sequence)] = sequence
      inputs[row, len(sequence)] = 1
      targets[row, : len(target)] = target
      targets[row, len(target)] = 1
    decoder_inputs = np.zeros_like(targets)
    decoder_inputs[:, 1:] = targets[:, :-1]  # shifted right, 0 = decoder start
    return {
      "encoder_input_tokens": inputs,
      "decoder_input_tokens": decoder_inputs,
      "decoder_target_tokens": targets,
      "decoder_loss_weights": (targets != 0).astype(np.float32),
    }
