"""Decoding throughput: flanjax (jitted while-loop + KV cache) vs HF PyTorch `generate`.

  python benchmarks/decode.py --d_model 256 --layers 4 --heads 4 --d_ff 1024 --vocab 8192 \
      --batch 16 --in_len 256 --decode_len 32 [--impl flanjax|hf] [--num_beams 4]

Greedy by default; `--num_beams k` times beam search (new tokens count the best beam's only).

Prints one JSON line with `decode_new_tokens_per_second` (batch × decode_len new tokens divided by
the median wall time of `--repeats` timed calls, after a warm-up call that includes compilation).
Both implementations decode the same random gated-GELU T5 (flanjax writes it, HF loads it) for
exactly `decode_len` tokens: EOS is set to an id the model can never produce.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--impl", choices=["flanjax", "hf"], default="flanjax")
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--d_ff", type=int, default=1024)
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--in_len", type=int, default=256)
  p.add_argument("--decode_len", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--num_beams", type=int, default=1, help="1: greedy; k > 1: beam search")
  p.add_argument("--dtype", default="float32")
  return p.parse_args()


def _time(fn, repeats):
  fn()  # warm-up: compilation (flanjax) / allocator warm-up (torch)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  args = _parse()
  from flanjax.model import hf
  from flanjax.model.config import T5Config

  # eos = vocab: never produced, so every row decodes exactly decode_len tokens.
  config = T5Config(
    vocab_size=args.vocab,
    d_model=args.d_model,
    d_kv=args.d_model // args.heads,
    d_ff=args.d_ff,
    num_layers=args.layers,
    num_heads=args.heads,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    eos_token_id=args.vocab,
    dtype=args.dtype,
  )
  rng = np.random.default_rng(0)
  input_ids = rng.integers(2, args.vocab, (args.batch, args.in_len)).astype(np.int32)
  model = hf.T5Model.init(config, seed=0)

  if args.impl == "flanjax":

    def run():
      out = model.generate(input_ids, max_new_tokens=args.decode_len, num_beams=args.num_beams)
      assert out.shape == (args.batch, args.decode_len), out.shape
  else:
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
      hf.save_pretrained(model, tmp)
      reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp).eval()
    ids = torch.tensor(input_ids, dtype=torch.long)

    def run():
      with torch.inference_mode():
        out = reference.generate(
          input_ids=ids,
          max_new_tokens=args.decode_len,
          min_new_tokens=args.decode_len,
          num_beams=args.num_beams,
          do_sample=False,
          eos_token_id=None,
        )
      assert out.shape == (args.batch, args.decode_len + 1), out.shape

  seconds = _time(run, args.repeats)
  print(
    json.dumps(
      {
        "impl": args.impl,
        "decode_new_tokens_per_second": args.batch * args.decode_len / seconds,
        "seconds_per_call": seconds,
        "batch": args.batch,
        "in_len": args.in_len,
        "decode_len": args.decode_len,
        "num_beams": args.num_beams,
        "d_model": args.d_model,
        "layers": args.layers,
        "dtype": args.dtype,
      }
    )
  )


if __name__ == "__main__":
  main()
