"""FLAN-T5-base recipe: fine-tune google/flan-t5-base (or google/t5-v1_1-base) on flan_mini.

Command:   python tools/launch.py train --config configs/flan_t5_base.py --workdir W
           (users online; offline, --config.init_from=/path/to/hf/dir and
           --config.vocab=/path/to/spiece.model or the dir holding it)
Hardware:  a TPU v4-8 or one 8-GPU host (mesh: FSDP over every chip; bf16 compute, f32 params;
           scanned + rematerialised layers, flash attention).
Time:      not measured (no TPU here). Estimate: 1.33e14 FLOP per step (flanjax/train/flops.py)
           at 50% MFU on 4 v4 chips (275 TFLOP/s bf16 each) is 0.24 s per step, about 5.6 h
           for config.train.steps (84k, the paper's schedule).
Recipe:    Adafactor, constant learning rate 1e-3, packing, inputs 2048 / targets 512, batch 64,
           summarization held out (flan_mini_holdout_summarization), evaluated on all categories.
Fits:      v4:2x2x1 (TPU v4-8, 4 chips), batch 64 in one step (no microbatches): per device
           train 11.22 GiB, score 8.11 GiB, decode 7.83 GiB of 30.75 GiB (tools/launch.py plan).
Expected:  the held-out summarization ROUGE stays near flan-t5-base's zero-shot figure
           (measure it first with: tools/launch.py eval --hf_model google/flan-t5-base ...).
"""

from configs import common


def get_config():
  return common.flan_t5_config("base")
