"""Packing examples into fixed-length rows: best-fit-decreasing placement and row filling.

`pack_best_fit` decides where each example of a window goes (row, offsets); `fill_rows` copies
token ids into batch arrays with seqio's EncDecFeatureConverter layout (segment ids and positions
per example, decoder inputs shifted right within each segment):

>>> pack_best_fit(np.array([3, 2, 1]), np.array([1, 1, 1]), (4, 4))[0]   # rows
array([0, 1, 0])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flanjax.data.tokenize import EOS_ID, TokenizedSplit


def pack_best_fit(
  input_lengths: np.ndarray, target_lengths: np.ndarray, capacity: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Best-fit-decreasing 2-D packing (denser than seqio's next-fit).

  Each example takes a share of a row in inputs and in targets. Examples are visited largest
  first, size being the norm of those shares weighted by how much the whole window asks of each
  dimension (so the scarcer dimension counts more); each goes into the open row with room for both
  parts that it leaves least (weighted) room in, or a new row. Rows that can no longer take the
  smallest example are closed, so the scan stays short. Returns per-example
  (row, input offset, target offset).
  >>> pack_best_fit(np.array([3, 2, 1]), np.array([1, 1, 1]), (4, 4))
  (array([0, 1, 0]), array([0, 0, 3]), array([0, 0, 1]))
  """
  count = len(input_lengths)
  share_in, share_tgt = input_lengths / capacity[0], target_lengths / capacity[1]
  demand_in, demand_tgt = share_in.sum(), share_tgt.sum()  # Rows each dimension needs.
  size = np.sqrt(demand_in * share_in**2 + demand_tgt * share_tgt**2)  # [count]
  order = np.argsort(-size, kind="stable")
  weight_in, weight_tgt = demand_in / capacity[0], demand_tgt / capacity[1]
  smallest_in, smallest_tgt = int(input_lengths.min()), int(target_lengths.min())
  # Open rows only (closed ones are compacted away): room left and the row's id.
  open_in = np.empty(count, np.int64)  # [max_open_rows]
  open_tgt = np.empty(count, np.int64)
  open_id = np.empty(count, np.int64)
  rows = np.empty(count, np.int64)
  in_offsets = np.empty(count, np.int64)
  tgt_offsets = np.empty(count, np.int64)
  num_open = num_rows = 0
  for step, i in enumerate(order):
    length_in, length_tgt = input_lengths[i], target_lengths[i]
    slot = -1
    if num_open:
      room_in, room_tgt = open_in[:num_open], open_tgt[:num_open]
      fits = (room_in >= length_in) & (room_tgt >= length_tgt)
      slot = int(np.where(fits, weight_in * room_in + weight_tgt * room_tgt, np.inf).argmin())
      if not fits[slot]:
        slot = -1
    if slot < 0:
      slot = num_open
      open_in[slot], open_tgt[slot], open_id[slot] = capacity[0], capacity[1], num_rows
      num_open += 1
      num_rows += 1
    rows[i] = open_id[slot]
    in_offsets[i] = capacity[0] - open_in[slot]
    tgt_offsets[i] = capacity[1] - open_tgt[slot]
    open_in[slot] -= length_in
    open_tgt[slot] -= length_tgt
    if step % 128 == 127:
      keep = np.flatnonzero(
        (open_in[:num_open] >= smallest_in) & (open_tgt[:num_open] >= smallest_tgt)
      )
      num_open = len(keep)
      open_in[:num_open], open_tgt[:num_open] = open_in[keep], open_tgt[keep]
      open_id[:num_open] = open_id[keep]
  return rows, in_offsets, tgt_offsets


@dataclasses.dataclass
class Window:
  """Examples of one window, sorted by row: per example task, index, row, offsets, segment."""

  task: np.ndarray
  index: np.ndarray
  row: np.ndarray
  in_offset: np.ndarray
  tgt_offset: np.ndarray
  segment: np.ndarray
  row_starts: np.ndarray  # [num_rows + 1]: examples of row r are [row_starts[r], row_starts[r+1])

  @property
  def num_rows(self) -> int:
    return len(self.row_starts) - 1


def empty_batch(batch_size: int, capacity: tuple[int, int], pack: bool) -> dict[str, np.ndarray]:
  in_shape, tgt_shape = (batch_size, capacity[0]), (batch_size, capacity[1])
  batch = {
    "encoder_input_tokens": np.zeros(in_shape, np.int32),  # [batch, inputs_length]
    "decoder_target_tokens": np.zeros(tgt_shape, np.int32),  # [batch, targets_length]
    "decoder_input_tokens": np.zeros(tgt_shape, np.int32),
    "decoder_loss_weights": np.zeros(tgt_shape, np.float32),
  }
  if pack:
    for prefix, shape in (("encoder", in_shape), ("decoder", tgt_shape)):
      batch[f"{prefix}_segment_ids"] = np.zeros(shape, np.int32)
      batch[f"{prefix}_positions"] = np.zeros(shape, np.int32)
  return batch


def _scatter(values, splits, index, row, offset, segment, capacity, tokens, segments, positions):
  """Copies each example's tokens (truncated to `capacity`, EOS kept) to `tokens[row, offset:]`.

  Returns (rows, cols, is_segment_start) of every written token, for the decoder shift.
  """
  starts = splits[index]
  lengths = np.minimum(splits[index + 1] - starts, capacity)
  total = int(lengths.sum())
  first = np.cumsum(lengths) - lengths  # [num_examples]: first flat token of each example
  within = np.arange(total) - np.repeat(first, lengths)  # [total_tokens]: position in segment
  rows = np.repeat(row, lengths)
  cols = np.repeat(offset, lengths) + within
  tokens[rows, cols] = values[np.repeat(starts, lengths) + within]
  truncated = (splits[index + 1] - starts) > capacity
  tokens[row[truncated], offset[truncated] + capacity - 1] = EOS_ID
  if segments is not None:
    segments[rows, cols] = np.repeat(segment, lengths)
    positions[rows, cols] = within
  return rows, cols, within == 0


def fill_rows(
  batch,
  window: Window,
  row_begin,
  row_end,
  batch_offset,
  data: list[TokenizedSplit],
  capacity,
  pack,
):
  """Copies window rows [row_begin, row_end) into batch rows from `batch_offset` on; `data[t]`
  holds the tokens of the window's task t."""
  begin, end = window.row_starts[row_begin], window.row_starts[row_end]
  picked = slice(begin, end)
  task, index = window.task[picked], window.index[picked]
  row = window.row[picked] - row_begin + batch_offset
  segment = window.segment[picked]
  for t in np.unique(task):
    mask = task == t
    source = data[t]
    for name, values, splits, offsets, length, key in (
      (
        "encoder",
        source.inputs_values,
        source.inputs_splits,
        window.in_offset,
        capacity[0],
        "encoder_input_tokens",
      ),
      (
        "decoder",
        source.targets_values,
        source.targets_splits,
        window.tgt_offset,
        capacity[1],
        "decoder_target_tokens",
      ),
    ):
      rows, cols, starts = _scatter(
        values,
        splits,
        index[mask],
        row[mask],
        offsets[picked][mask],
        segment[mask],
        length,
        batch[key],
        batch.get(f"{name}_segment_ids") if pack else None,
        batch.get(f"{name}_positions") if pack else None,
      )
      if name == "decoder":
        # Targets shifted right within each segment: 0 at a segment start, else previous token.
        shifted = batch[key][rows, np.maximum(cols - 1, 0)]
        batch["decoder_input_tokens"][rows, cols] = np.where(starts, 0, shifted)
        batch["decoder_loss_weights"][rows, cols] = 1.0
