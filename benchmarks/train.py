"""Training-step throughput and MFU of flanjax (JAX) or HF PyTorch T5 on synthetic batches.

    python benchmarks/train.py --d_model 256 --layers 4 --heads 4 --d_ff 1024 --vocab 8192 \
        --batch 16 --in_len 256 --tgt_len 64 [--impl flanjax|hf] [--optimizer adafactor|adamw]

Prints one JSON line: train_tokens_per_second (batch x (in_len + tgt_len) per second of full,
unpadded batches), step_seconds, mfu, the peak it is measured against, and peak_rss_mb. A step is
a full optimizer step (forward, backward, update); the first steps (compilation, warm-up) are not
timed. `--impl hf` runs transformers' T5ForConditionalGeneration with torch.optim.AdamW on the same
shape and batch.

FLOPs per step (flanjax/train/flops.py, counted the same way for both implementations):
    6 * batch * (N_enc * in_len + (N_dec + N_head) * tgt_len)
  + 12 * batch * heads * d_kv * (layers * in_len^2 + layers * (tgt_len^2 + tgt_len * in_len))
with N_enc / N_dec the weight-matrix parameters of the encoder / decoder layers (q, k, v, o, MLP;
cross-attention in the decoder), N_head = d_model * vocab, embeddings and norms excluded.
Peak: measured in the same process with a large f32 matmul through the same framework (JAX or
torch), since CPU peaks differ by framework; on a known accelerator the datasheet dense bf16 peak
is reported too (`mfu_vs_datasheet`; 989 TFLOP/s for H100/H200).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from flanjax.model.config import T5Config  # noqa: E402
from flanjax.train import flops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--impl", choices=("flanjax", "hf"), default="flanjax")
  parser.add_argument("--d_model", type=int, default=256)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--d_ff", type=int, default=1024)
  parser.add_argument("--vocab", type=int, default=8192)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--in_len", type=int, default=256)
  parser.add_argument("--tgt_len", type=int, default=64)
  parser.add_argument("--feed_forward", default="gated-gelu", choices=("relu", "gated-gelu"))
  parser.add_argument(
    "--optimizer",
    default="adafactor",
    choices=("adafactor", "adamw"),
    help="flanjax only (HF always uses torch AdamW)",
  )
  parser.add_argument(
    "--dtype",
    default=None,
    choices=("float32", "bfloat16"),
    help="compute dtype; default bfloat16 on accelerators, float32 on CPU",
  )
  parser.add_argument("--microbatches", type=int, default=1)
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile, warm-up)")
  parser.add_argument("--peak_matmul_size", type=int, default=4096)
  return parser.parse_args(argv)


def model_config(args, dtype: str) -> T5Config:
  return T5Config(
    vocab_size=args.vocab,
    d_model=args.d_model,
    d_kv=args.d_model // args.heads,
    d_ff=args.d_ff,
    num_layers=args.layers,
    num_heads=args.heads,
    dropout_rate=0.0,
    feed_forward_proj=args.feed_forward,
    tie_word_embeddings=args.feed_forward == "relu",
    dtype=dtype,
  )


def synthetic_batch(args) -> dict:
  from flanjax.train.synthetic import SyntheticTask

  return SyntheticTask(
    batch_size=args.batch,
    input_length=args.in_len,
    target_length=args.tgt_len,
    vocab_size=args.vocab,
    full=True,
  ).global_batch(0)


def run_flanjax(args) -> dict:
  import jax

  from flanjax import partitioning
  from flanjax.model import t5
  from flanjax.train.optim import OptimizerConfig, make_optimizer, make_schedule
  from flanjax.train.state import create_train_state
  from flanjax.train.step import jit_train_step, make_apply_fn, make_train_step

  platform = jax.devices()[0].platform
  dtype = args.dtype or ("float32" if platform == "cpu" else "bfloat16")
  cfg = model_config(args, dtype)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1, fsdp=-1, model=1))
  opt_config = OptimizerConfig(name=args.optimizer, learning_rate=1e-3)
  optimizer = make_optimizer(opt_config, 1000)
  state, shardings = create_train_state(
    init_fn=lambda rng: t5.init_params(cfg, rng),
    logical_specs=t5.param_logical_axes(cfg),
    optimizer=optimizer,
    mesh=mesh,
    seed=0,
  )
  step = jit_train_step(
    make_train_step(
      make_apply_fn(cfg),  # the loop's own model call
      optimizer,
      make_schedule(opt_config, 1000),
      dropout_seed=0,
      num_microbatches=args.microbatches,
    ),
    shardings,
    mesh,
  )
  batch = partitioning.make_global_batch(synthetic_batch(args), mesh)
  for _ in range(args.warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  step_seconds = (time.perf_counter() - start) / args.steps
  # The best of two sizes: XLA:CPU is sometimes faster at 2048 than at 4096 (cache blocking),
  # and a higher peak gives the more conservative MFU.
  measured = max(
    flops.measure_matmul_peak_flops(size)
    for size in (args.peak_matmul_size // 2, args.peak_matmul_size)
  )
  datasheet = next(
    (
      peak
      for prefix, peak in flops.KNOWN_PEAK_FLOPS.items()
      if jax.devices()[0].device_kind.startswith(prefix)
    ),
    None,
  )
  chips = 1 if platform == "cpu" else jax.device_count()
  return dict(
    impl="flanjax",
    dtype=dtype,
    optimizer=args.optimizer,
    device=platform,
    device_kind=jax.devices()[0].device_kind,
    devices=jax.device_count(),
    step_seconds=step_seconds,
    loss=float(metrics["loss"]),
    peak_flops_measured=measured * chips,
    peak_source="jax f32 matmul (best of 2 sizes)",
    datasheet_peak=datasheet * chips if datasheet else None,
    params=int(t5.count_params(state.params)),
  )


def run_hf(args) -> dict:
  import torch
  import transformers

  cfg = model_config(args, "float32")
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_config()))
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
  batch = synthetic_batch(args)
  input_ids = torch.as_tensor(batch["encoder_input_tokens"], dtype=torch.long)
  labels = torch.as_tensor(batch["decoder_target_tokens"], dtype=torch.long)
  attention_mask = input_ids != 0

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss

  for _ in range(args.warmup):
    train_step()
  start = time.perf_counter()
  for _ in range(args.steps):
    loss = train_step()
  step_seconds = (time.perf_counter() - start) / args.steps
  best_flops = 0.0
  for size in (args.peak_matmul_size // 2, args.peak_matmul_size):
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    for _ in range(5):
      tick = time.perf_counter()
      a @ b
      best_flops = max(best_flops, 2 * size**3 / (time.perf_counter() - tick))
  return dict(
    impl="hf",
    dtype="float32",
    optimizer="adamw (torch)",
    device="cpu",
    torch_threads=torch.get_num_threads(),
    step_seconds=step_seconds,
    loss=float(loss.detach()),
    peak_flops_measured=best_flops,
    peak_source="torch f32 matmul (best of 2 sizes)",
    datasheet_peak=None,
    params=int(sum(p.numel() for p in model.parameters())),
  )


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.batch % args.microbatches:
    raise SystemExit(f"--batch {args.batch} is not divisible by --microbatches {args.microbatches}")
  result = run_flanjax(args) if args.impl == "flanjax" else run_hf(args)
  step_flops = args.batch * flops.train_flops_per_sequence(
    model_config(args, "float32"), args.in_len, args.tgt_len
  )
  tokens = args.batch * (args.in_len + args.tgt_len)
  result.update(
    shape=dict(
      d_model=args.d_model,
      layers=args.layers,
      heads=args.heads,
      d_ff=args.d_ff,
      vocab=args.vocab,
      batch=args.batch,
      in_len=args.in_len,
      tgt_len=args.tgt_len,
      feed_forward=args.feed_forward,
    ),
    train_tokens_per_second=tokens / result["step_seconds"],
    flops_per_step=step_flops,
    model_flops_per_second=step_flops / result["step_seconds"],
    mfu=step_flops / result["step_seconds"] / result["peak_flops_measured"],
    peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  )
  if result.get("datasheet_peak"):
    result["mfu_vs_datasheet"] = step_flops / result["step_seconds"] / result["datasheet_peak"]
  print(json.dumps(result))


if __name__ == "__main__":
  main()
