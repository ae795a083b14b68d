#!/usr/bin/env python
"""The single entry point: train / eval / export / predict / tasks / show / vocab / demo.

  python tools/launch.py train --config configs/demo.py --workdir workdirs/demo \
      [--config.train.steps=200 ...] [--launcher local|multiprocess|slurm|tpu-vm] [--dry_run]
  python tools/launch.py eval --config configs/demo.py --workdir W [--checkpoint STEP]
  python tools/launch.py eval --config configs/flan_t5_small.py --hf_model DIR --workdir W
  python tools/launch.py export --config configs/demo.py --workdir W --out DIR [--checkpoint N]
  python tools/launch.py predict --workdir W --input prompts.jsonl --output preds.jsonl
  python tools/launch.py tasks | show --task NAME -n 3 | vocab --mixture M --size N --out PATH
  python tools/launch.py demo --workdir workdirs/demo     # what `make demo` runs

This file parses flags and calls the library (STYLE rule 2); see flanjax/cli.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not os.environ.get("FLANJAX_DEBUG"):
  # TensorFlow's and XLA's C++ start-up chatter (CUDA probing, oneDNN notes) hides what matters;
  # FLANJAX_DEBUG=1 keeps it, with full tracebacks.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from flanjax import cli  # noqa: E402

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv[1:]))
