"""Data pipeline benchmark: flanjax's packed stream vs seqio's stock EncDecFeatureConverter.

Command (2 CPU cores here; ~1-2 min each):
  FLANJAX_DATA_DIR=../shared/data .venv/bin/python benchmarks/data.py \
      --mixture flan_mini --in_len 512 --tgt_len 128 --batch 32 [--impl seqio] \
      [--hosts N --host_index I]
`--batch` is the global batch. With `--hosts N`, flanjax builds host I's iterator only (as on
one host of an N-host run: every host packs the whole global window and copies its own
batch / N rows), so the figures are one host's cost.
Prints one JSON line: impl, hosts, examples_per_second (this host's rows, steady state, after the
first batch), ms_per_global_batch (this host's time per step), seconds_to_first_batch,
inputs_fill, targets_fill (non-pad tokens / all tokens of this host's rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _count(batch) -> tuple[int, int, int, int, int]:
  """(examples, input tokens, input slots, target tokens, target slots) of one batch."""
  inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
  if "encoder_segment_ids" in batch:
    examples = int(batch["encoder_segment_ids"].max(axis=1).sum())
  else:
    examples = int((inputs != 0).any(axis=1).sum())
  return (
    examples,
    int(np.count_nonzero(inputs)),
    inputs.size,
    int(np.count_nonzero(targets)),
    targets.size,
  )


def _context():
  from flanjax.data import DataContext

  return DataContext()  # data dir from env FLANJAX_DATA_DIR, byte vocabulary


def _flanjax_batches(args):
  from flanjax.data import pipeline

  return pipeline.make_batch_iterator(
    _context(),
    args.mixture,
    "train",
    lengths={"inputs": args.in_len, "targets": args.tgt_len},
    batch_size=args.batch // args.hosts,
    seed=0,
    shard_index=args.host_index,
    num_shards=args.hosts,
  )


def _seqio_batches(args):
  import seqio

  lengths = {"inputs": args.in_len, "targets": args.tgt_len}
  mixture = _context().get(args.mixture)
  dataset = mixture.get_dataset(lengths, split="train", shuffle=True, seed=0, num_epochs=None)
  converter = seqio.EncDecFeatureConverter(pack=True)
  dataset = converter(dataset, lengths).batch(args.batch, drop_remainder=True)
  return dataset.as_numpy_iterator()


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mixture", default="flan_mini")
  parser.add_argument("--in_len", type=int, default=512)
  parser.add_argument("--tgt_len", type=int, default=128)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--batches", type=int, default=100, help="timed batches after the first")
  parser.add_argument("--impl", choices=("flanjax", "seqio"), default="flanjax")
  parser.add_argument("--hosts", type=int, default=1, help="simulated hosts (flanjax only)")
  parser.add_argument("--host_index", type=int, default=0, help="the host measured")
  args = parser.parse_args(argv)
  if args.batch % args.hosts or not 0 <= args.host_index < args.hosts:
    parser.error(f"--batch {args.batch} must split over --hosts {args.hosts}, host_index below")
  if args.hosts > 1 and args.impl != "flanjax":
    parser.error("--hosts is for --impl flanjax")

  import mixtures  # noqa: F401  (registers the tasks)

  start = time.perf_counter()
  batches = (_flanjax_batches if args.impl == "flanjax" else _seqio_batches)(args)
  totals = np.array(_count(next(batches)))
  first = time.perf_counter() - start
  timed = np.zeros(5, np.int64)
  start = time.perf_counter()
  for _ in range(args.batches):
    timed += _count(next(batches))
  seconds = time.perf_counter() - start
  totals += timed
  result = {
    "impl": args.impl,
    "mixture": args.mixture,
    "in_len": args.in_len,
    "tgt_len": args.tgt_len,
    "batch": args.batch,
    "hosts": args.hosts,
    "host_index": args.host_index,
    "examples_per_second": round(float(timed[0]) / seconds, 1),
    "ms_per_global_batch": round(1000 * seconds / args.batches, 2),
    "seconds_to_first_batch": round(first, 2),
    "inputs_fill": round(float(totals[1]) / totals[2], 4),
    "targets_fill": round(float(totals[3]) / totals[4], 4),
  }
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
