"""Predictions of a model on eval examples: the best option (rank classification) for examples
with options, greedy / beam decoding for the others; on the model's mesh, every batch is split
over its devices (of every process).

Example:
  >>> predict(model, examples, option_ids, shapes, eval_config, vocabulary, 1)  # doctest: +SKIP
  ['positive', 'a cat on a mat', ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flanjax import partitioning
from flanjax.config import EvalConfig
from flanjax.eval import rank as rank_lib
from flanjax.eval.tasks import EvalExample


def fit_ids(ids: Sequence[int], max_length: int, eos_id: int) -> tuple[tuple[int, ...], bool]:
  """Ids (EOS last) cut to `max_length` with their EOS kept (seqio's `append_eos_after_trim`);
  returns (ids, whether they were cut).

  Example:
    >>> fit_ids([5, 6, 7, 1], 3, eos_id=1)
    ((5, 6, 1), True)
  """
  if len(ids) > max_length:
    return tuple(ids[: max_length - 1]) + (eos_id,), True
  return tuple(ids), False


def strip_after_eos(ids: Sequence[int], eos_id: int) -> list[int]:
  """Generated ids up to (not including) the first EOS, without padding."""
  out = []
  for token in ids:
    token = int(token)
    if token == eos_id:
      break
    if token != 0:
      out.append(token)
  return out


def _decode_predictions(
  model,
  vocabulary,
  examples: Sequence[EvalExample],
  *,
  batch_size: int,
  input_length: int,
  max_new_tokens: int,
  num_beams: int,
  eos_id: int,
) -> list[str]:
  predictions = []
  batch_size = partitioning.padded_rows(batch_size, model.mesh)  # same rows on every device
  for start in range(0, len(examples), batch_size):
    batch = examples[start : start + batch_size]
    # Padding rows hold a lone EOS so every row attends to something; their outputs are dropped.
    rows = [e.input_ids for e in batch] + [(eos_id,)] * (batch_size - len(batch))
    tokens = rank_lib.pad_rows(rows, input_length)  # [batch_size, input_length]
    generated = model.generate(  # on the model's mesh, under its axis rules
      tokens,
      attention_mask=(tokens != 0).astype(np.int32),
      max_new_tokens=max_new_tokens,
      num_beams=num_beams,
    )  # [batch_size, <=max_new_tokens]
    predictions += [vocabulary.decode(strip_after_eos(g, eos_id)) for g in generated[: len(batch)]]
  return predictions


def predict(
  model, examples, option_ids, shapes, cfg: EvalConfig, vocabulary, eos_id: int
) -> list[str]:
  """The prediction of every example: its best option (rank classification) or decoded text."""
  predictions: list[Any] = [None] * len(examples)
  ranked = [i for i, e in enumerate(examples) if e.options]
  if ranked:
    result = rank_lib.rank_classify(
      model,
      [examples[i].input_ids for i in ranked],
      [[option_ids[o] for o in examples[i].options] for i in ranked],
      batch_size=cfg.batch_size,
      length_normalize=cfg.length_normalize,
      num_options=shapes.num_options,
      input_length=shapes.input_length,
      target_length=shapes.target_length,
    )
    for i, choice in zip(ranked, result.choices, strict=True):
      predictions[i] = examples[i].options[int(choice)]
  decoded = [i for i, e in enumerate(examples) if not e.options]
  if decoded:
    texts = _decode_predictions(
      model,
      vocabulary,
      [examples[i] for i in decoded],
      batch_size=cfg.batch_size,
      input_length=shapes.input_length,
      max_new_tokens=cfg.target_length,
      num_beams=cfg.num_beams,
      eos_id=eos_id,
    )
    for i, text in zip(decoded, texts, strict=True):
      predictions[i] = text
  return predictions
