"""The FLAN-T5 held-out evaluation: MMLU, BIG-Bench Hard and MGSM for any T5 (HF dir or workdir).

Command:   FLANJAX_BENCHMARK_DIR=../shared/benchmarks python tools/launch.py eval
             --config configs/eval_flan2022.py --hf_model google/flan-t5-base --workdir W
           (or an HF directory; one benchmark: --config.eval_mixtures=mmlu_5shot; a quick look:
           --config.eval.max_examples=20). A checkpoint of a training run: evaluate it with the
           config it was trained with plus --config.eval_mixtures=mmlu_5shot,bbh_direct,bbh_cot,
           mgsm_8shot --config.eval.inputs=2048 --config.eval.targets=256.
Hardware:  one accelerator with 16 GB or more for flan-t5-base / large (2,048-token inputs);
           CPUs work for tiny models only.
Time:      not measured on an accelerator yet. The work per mode: MMLU 14,042 questions (rank
           classification over A-D: one encoder pass over <= 2,048 tokens each), BBH 6,511 greedy
           decodes (up to 256 new tokens), MGSM 2,750 decodes. Measured: a tiny random T5
           (d_model 64, 2+2 layers, 640 ids) with --config.eval.max_examples=20 (3,800 examples,
           190 tasks) takes 21 minutes on 2 shared CPU cores: MMLU 0/5-shot 1.7 / 6.3 min, BBH
           direct / CoT 2.2 / 8.3 min, MGSM 0/8-shot 0.2 / 2.6 min.
Expected:  the published Flan-T5 figures (Chung et al. 2022, "Scaling Instruction-Finetuned
           Language Models", arXiv:2210.11416, the Flan-T5 rows of its results tables (Table 5;
           a third-party check cites Large 45.1 from Table 6); accuracy / exact match, %).
           Quoted from memory: verify against the paper before relying on a digit.

             model           MMLU 5-shot  BBH direct  BBH CoT  MGSM CoT 8-shot  TyDiQA 1-shot
             Flan-T5-Small        28.7        29.1       19.2         0.2            1.1
             Flan-T5-Base         35.9        31.3       27.9         0.4            4.1
             Flan-T5-Large        45.1        37.5       31.5         0.7           12.6
             Flan-T5-XL           52.4        41.0       35.8         1.9           16.6
             Flan-T5-XXL          55.1        45.3       41.4         4.9           19.0
           (MMLU: direct prompting; BBH: 3-shot.)

           Rows of this report to compare: benchmarks["mmlu_5shot"]["score"] (mean over the
           14,042 questions), benchmarks["bbh_direct"/"bbh_cot"]["score"] (mean over the 27
           task files) and benchmarks["mgsm_8shot"]["score"] (mean over 11 languages). TyDiQA is
           not shipped in ../shared/benchmarks. Differences to expect: the paper's BBH mean is
           over 23 tasks and its exact prompts and answer parsing were not published; inputs
           longer than eval.inputs are cut from the end (the report counts them).
"""

from configs import common

BENCHMARK_MIXTURES = (
  "mmlu_0shot",
  "mmlu_5shot",
  "bbh_direct",
  "bbh_cot",
  "mgsm_0shot",
  "mgsm_8shot",
)


def get_config():
  c = common.base_config()
  # Eval-only: a benchmark mixture has no train split, so `train` with this config refuses to
  # start; with nothing trained on, every benchmark category is reported as held out.
  c.mixture = "benchmarks"
  c.eval_mixtures = BENCHMARK_MIXTURES
  # flan-t5-base shapes (ignored with --hf_model, which brings its own config.json).
  c.model = common.model_config(
    vocab_size=32128,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    **common.T5_V11_SHAPES["base"],
  )
  c.lengths.inputs, c.lengths.targets = 2048, 256
  # 5-shot MMLU and 3-shot CoT BBH prompts run past 1,000 tokens; CoT answers need room.
  c.eval.update(split="test", inputs=2048, targets=256, batch_size=16, max_examples=0)
  return c
