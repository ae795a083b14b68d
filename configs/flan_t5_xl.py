"""FLAN-T5-XL recipe: fine-tune google/flan-t5-xl (or google/t5-v1_1-xl) on flan_mini.

Command:   python tools/launch.py train --config configs/flan_t5_xl.py --workdir W \
               --launcher tpu-vm --tpu NAME --zone Z
           (offline: --config.init_from=/path/to/hf/dir; check the topology first with
           python tools/launch.py plan --config configs/flan_t5_xl.py --topology TOPOLOGY)
Hardware:  a TPU pod slice (see Fits below); FSDP over every chip, bf16 compute, f32 params,
           scanned + rematerialised layers, Pallas flash attention.
Time:      not measured here (no TPU); plan reports the compiled FLOPs per step.
Recipe:    Adafactor, constant learning rate 1e-3, packing, inputs 2048 / targets 512, batch 64,
           summarization held out (flan_mini_holdout_summarization), evaluated on all categories.
Fits:      v4:2x2x1 (TPU v4-8, 4 chips), batch 64 as 4 microbatches: per device
           train 21.17 GiB, score 14.12 GiB, decode 23.45 GiB of 30.75 GiB (tools/launch.py plan).
Expected:  the held-out summarization ROUGE stays near flan-t5-xl's zero-shot figure
           (measure it first with: tools/launch.py eval --hf_model google/flan-t5-xl ...).
"""

from configs import common


def get_config():
  return common.flan_t5_config("xl")
