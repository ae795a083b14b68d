"""Batch inference over a file of prompts: `tools/launch.py predict`.

Input: `prompts.txt` (one prompt per non-empty line) or `prompts.jsonl` (one JSON object per
line with the prompt in `input`, or `inputs` / `prompt`). Output: JSONL, one line per prompt in
input order, keeping the input's fields and adding `prediction` (and `truncated: true` where the
prompt was cut to the input length, EOS kept). The whole input file is read and checked first,
so a bad line is reported with its line number before any model work; the output is written
batch by batch (flushed), so an interrupted run keeps every line already written.

Example:
  >>> rows = read_prompts("prompts.jsonl")                               # doctest: +SKIP
  >>> predict_rows(model, vocabulary, rows, "preds.jsonl", PredictOptions(max_new_tokens=16))
  3                                                                      # doctest: +SKIP
  $ head -1 preds.jsonl
  {"input": "Translate to German: a cat", "id": 7, "prediction": "eine Katze"}
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from flanjax.eval.inference import fit_ids, strip_after_eos

PROMPT_FIELDS = ("input", "inputs", "prompt")


@dataclasses.dataclass(frozen=True)
class PredictOptions:
  batch_size: int = 16
  max_input_length: int = 512
  max_new_tokens: int = 64
  num_beams: int = 1
  temperature: float = 0.0  # 0: greedy (or beam search); > 0: sampling at this temperature
  top_k: int = 0
  seed: int = 0


def read_prompts(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Rows `{"input": prompt, ...other fields}`; ValueError naming `path:line` on a bad line."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--input {path} does not exist")
  rows = []
  is_jsonl = path.endswith((".jsonl", ".json"))
  with open(path, "rb") as handle:
    for number, raw in enumerate(handle, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as error:
        raise ValueError(f"{path}:{number}: not UTF-8 ({error.reason})") from None
      if not line.strip():
        continue
      if not is_jsonl:
        rows.append({"input": line.rstrip("\n")})
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: malformed JSON ({error.msg})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
      field = next((f for f in PROMPT_FIELDS if f in record), None)
      if field is None or not isinstance(record[field], str):
        raise ValueError(
          f"{path}:{number}: no prompt: expected a string field {' / '.join(PROMPT_FIELDS)}"
        )
      rows.append({**record, "input": record[field]} if field == "input" else record)
  if not rows:
    raise ValueError(f"--input {path} holds no prompt")
  return rows


def _prompt(row: dict[str, Any]) -> str:
  return next(row[f] for f in PROMPT_FIELDS if f in row)


def _encode(vocabulary, text: str, max_length: int) -> tuple[tuple[int, ...], bool]:
  """Token ids with EOS last, cut to `max_length` keeping the EOS; (ids, truncated)."""
  eos = int(vocabulary.eos_id)
  return fit_ids([*vocabulary.encode(text), eos], max_length, eos)


def predict_rows(
  model,
  vocabulary,
  rows: Sequence[dict[str, Any]],
  output_path: str | os.PathLike,
  options: PredictOptions,
  *,
  progress: bool = True,
) -> int:
  """Writes one JSON line per row (input fields + `prediction`); returns the truncated count."""
  from tqdm import tqdm

  eos = int(vocabulary.eos_id)
  truncated = 0
  os.makedirs(os.path.dirname(os.path.abspath(output_path)) or ".", exist_ok=True)
  with (
    open(output_path, "w", encoding="utf-8") as out,
    tqdm(
      total=len(rows), desc="predict", unit="prompt", disable=not progress, file=sys.stderr
    ) as bar,
  ):
    for start in range(0, len(rows), options.batch_size):
      batch = rows[start : start + options.batch_size]
      encoded = [_encode(vocabulary, _prompt(r), options.max_input_length) for r in batch]
      length = max(len(ids) for ids, _ in encoded)
      tokens = np.zeros((options.batch_size, length), np.int32)  # [batch, length], fixed rows
      tokens[:, 0] = eos  # padding rows hold a lone EOS; their outputs are dropped
      for i, (ids, _) in enumerate(encoded):
        tokens[i, : len(ids)] = ids
      generated = np.asarray(
        model.generate(
          tokens,
          attention_mask=(tokens != 0).astype(np.int32),
          max_new_tokens=options.max_new_tokens,
          num_beams=options.num_beams,
          do_sample=options.temperature > 0,
          temperature=options.temperature or 1.0,
          top_k=options.top_k,
          seed=options.seed + start,
        )
      )  # [batch, <= max_new_tokens]
      for row, (_, cut), ids in zip(batch, encoded, generated, strict=False):
        record = {**row, "prediction": vocabulary.decode(strip_after_eos(ids, eos))}
        if cut:
          record["truncated"] = True
          truncated += 1
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
      out.flush()
      bar.update(len(batch))
  return truncated
