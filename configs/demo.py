"""The embedded demo: a tiny T5 trained from scratch on the synthetic toy mixture, on CPU.

Command:   make demo      (= python tools/launch.py demo --workdir workdirs/demo)
Hardware:  2 CPU cores, no accelerator, no network, no data files.
Time:      about 5 minutes of training + 1 minute of evaluation (6-7 min measured, 2 cores).
Protocol:  FLAN's held-out protocol in miniature: train on every toy category except
           sentiment, then evaluate all categories zero-shot (sentiment is marked held out).
Expected:  measured at step 1600 (test split, best template chosen on validation), seen
           categories: closed_book_qa exact match 80, misc exact match 43 (sort 77, reverse 32,
           copy 19), natural language inference accuracy 64.5 and paraphrase 71 (chance 50);
           held-out sentiment 42.5, i.e. no better than chance: a 1M-parameter model trained
           for minutes does not generalise zero-shot to an unseen category — the honest answer
           at this scale to FLAN's question.
"""

from configs import common


def get_config():
  c = common.base_config()
  c.mixture = "toy_holdout_sentiment"
  c.eval_mixtures = ("toy",)
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
  c.lengths.inputs, c.lengths.targets = 128, 32
  c.train.update(
    steps=1600, batch_size=32, log_every=50, checkpoint_every=300, keep_checkpoints=2, eval_every=0
  )
  c.optimizer.update(name="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=100)
  c.mesh.update(data=1, fsdp=-1, model=1)
  c.eval.update(split="test", max_examples=100, batch_size=64)
  return c
