"""Writes the Hugging Face tokenizer that matches a seqio vocabulary, beside an exported model.

Without it `AutoTokenizer.from_pretrained(export_dir)` silently builds an empty T5 tokenizer that
encodes everything as unknowns. Two cases, matching what flanjax tokenised with:
* `seqio.SentencePieceVocabulary` (T5's own spiece.model, one trained by `tools/launch.py vocab`,
  the toy vocabulary): `spiece.model` + a `T5Tokenizer` config with the same 100 sentinels;
* `seqio.ByteVocabulary` (ids = byte + 3 after pad/eos/unk): a `ByT5Tokenizer` config.

Example:
  >>> write_hf_tokenizer(ctx.vocabulary_of("toy"), "exported/")   # doctest: +SKIP
  'T5Tokenizer'
  >>> transformers.AutoTokenizer.from_pretrained("exported/")("Repeat: car egg").input_ids
  [..., 1]                                                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import os

import seqio


def write_hf_tokenizer(vocabulary: seqio.Vocabulary, out_dir: str | os.PathLike) -> str:
  """Writes tokenizer files for `vocabulary` into `out_dir`; returns the tokenizer class name."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    with open(os.path.join(out_dir, "spiece.model"), "wb") as handle:
      handle.write(vocabulary.sp_model)
    extra_ids = int(vocabulary.extra_ids or 0)
    config = {
      "tokenizer_class": "T5Tokenizer",
      "extra_ids": extra_ids,
      "additional_special_tokens": [f"<extra_id_{i}>" for i in range(extra_ids)],
      **special,
    }
  elif isinstance(vocabulary, seqio.ByteVocabulary):
    config = {"tokenizer_class": "ByT5Tokenizer", "extra_ids": 0, **special}
  else:
    raise TypeError(
      f"cannot write an HF tokenizer for {type(vocabulary).__name__}: expected a seqio "
      "SentencePieceVocabulary or ByteVocabulary"
    )
  # Stale files from a copied tokenizer would take precedence over the ones written here.
  for stale in ("tokenizer.json", "special_tokens_map.json", "added_tokens.json"):
    path = os.path.join(out_dir, stale)
    if os.path.exists(path):
      os.remove(path)
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as handle:
    json.dump(config, handle, indent=2)
  return config["tokenizer_class"]
