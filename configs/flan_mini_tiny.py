"""A tiny T5 from scratch on the real flan_mini mixture, sentiment held out; CPU-sized.

Command:   python tools/launch.py train --config configs/flan_mini_tiny.py --workdir W
           (data from config.data_dir or $FLANJAX_DATA_DIR, e.g. ../shared/data)
Hardware:  2 CPU cores (or anything larger).
Time:      about 15 minutes for 600 steps on 2 cores.
Expected:  training loss falls steadily (byte vocabulary, so inputs are long); scores stay low:
           this config checks the real-data path end to end, it does not make a useful model.
"""

from configs import common


def get_config():
  c = common.base_config()
  c.mixture = "flan_mini_holdout_sentiment"
  c.eval_mixtures = ("flan_mini",)
  c.model = common.model_config(
    vocab_size=384,
    d_model=128,
    d_kv=32,
    d_ff=256,
    num_layers=2,
    num_heads=4,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
  )
  c.lengths.inputs, c.lengths.targets = 512, 128
  c.train.update(
    steps=600, batch_size=16, log_every=25, checkpoint_every=200, keep_checkpoints=2, eval_every=0
  )
  c.optimizer.update(name="adafactor", learning_rate=1e-2, schedule="rsqrt", warmup_steps=100)
  c.eval.update(max_examples=50, batch_size=32)
  return c
