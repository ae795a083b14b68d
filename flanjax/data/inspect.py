"""What `tools/launch.py tasks | show | vocab` print and write, for a data context.

>>> list_tasks(DEFAULT)                     # doctest: +SKIP
task            family category                    templates metrics       train validation test
cb              flan   natural_language_inference  6        accuracy      250   56         -
...
>>> show_task(DEFAULT, "sst2", n=1)         # doctest: +SKIP
=== sst2 [validation] example 0, template 0 ===
Review:
it 's a charming and often affecting journey .
...
"""

from __future__ import annotations

import sys
from typing import TextIO

import seqio

from flanjax.data import sources as sources_lib
from flanjax.data import tasks as tasks_lib
from flanjax.data import vocab as vocab_lib
from flanjax.data.context import QUALIFIER, DataContext

SPLITS = sources_lib.SPLITS


def _row_counts(context: DataContext, name: str) -> list[str]:
  try:
    source = context.bound_source(name)
    available = set(source.splits) if source.is_available() else None
    if available is None:
      return ["?"] * len(SPLITS)
    return [str(source.count(s)) if s in available else "-" for s in SPLITS]
  except (FileNotFoundError, ValueError):
    return ["?"] * len(SPLITS)


def list_tasks(context: DataContext, out: TextIO = sys.stdout) -> None:
  """Prints every FLAN task (category, templates, metrics, rows per split), then the mixtures.

  "?" means the data dir is not reachable (set config.data_dir or FLANJAX_DATA_DIR); "-" that
  the split is absent.
  """
  header = ["task", "family", "category", "templates", "metrics", *SPLITS]
  rows, counts = [], {}
  for name in tasks_lib.list_flan_tasks():
    info = tasks_lib.get_task_info(name)
    counts[name] = _row_counts(context, name)
    rows.append(
      [
        name,
        info.family,
        info.category,
        str(len(info.template_ids)),
        ",".join(info.metrics),
        *counts[name],
      ]
    )
  _print_table(header, rows, out)
  out.write(f"\ncategories: {', '.join(tasks_lib.CATEGORIES)}\n\n")
  mixture_rows = []
  for name in sorted(n for n in seqio.MixtureRegistry.names() if QUALIFIER not in n):
    members = context.task_names(name)
    if not all(m in counts for m in members):
      continue
    train_counts = [counts[m][0] for m in members]
    train_rows = sum(int(c) for c in train_counts if c.isdigit())
    unknown = any(c == "?" for c in train_counts)
    mixture_rows.append(
      [name, str(len(members)), "?" if unknown else str(train_rows), " ".join(members)]
    )
  _print_table(["mixture", "tasks", "train rows", "members"], mixture_rows, out)


def _print_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
  for row in [header, *rows]:
    out.write(
      "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
    )
    out.write("\n")


def show_task(
  context: DataContext,
  name: str,
  n: int = 3,
  split: str = "validation",
  out: TextIO = sys.stdout,
) -> None:
  """Prints the first `n` examples of a split, each rendered with every template it uses there
  (one drawn template per example on "train", every eval template on the other splits)."""
  splits = context.bound_source(name).splits
  if split not in splits:
    raise ValueError(f"task {name!r} has no split {split!r}; splits: {list(splits)}")
  rendered = context.rendered_split(name, split)
  info = tasks_lib.get_task_info(name)
  out.write(
    f"# {name}: category {info.category}, metrics {list(info.metrics)}, "
    f"{len(info.template_ids)} templates ({len(info.eval_template_ids)} for eval)\n"
  )
  for row, index in enumerate(rendered["example_index"]):
    if index >= n:
      break
    template_id = rendered["template_id"][row]
    out.write(f"=== {name} [{split}] example {index}, template {template_id} ===\n")
    out.write(rendered["inputs"][row] + "\n")
    out.write(f"--- target ---\n{rendered['targets'][row]}\n\n")


def train_vocab(
  context: DataContext, mixture: str, size: int, out_path: str, max_texts_per_task: int = 20_000
) -> str:
  """Trains a T5-style SentencePiece model (pad 0, eos 1, unk 2; +100 sentinels when loaded by
  `vocab.get_vocabulary(out_path)`) on the rendered train inputs and targets of a mixture read
  with `context`'s data dir. Returns `out_path`."""
  texts = []
  for name in context.task_names(mixture):
    if "train" not in context.bound_source(name).splits:
      continue
    rendered = context.rendered_split(name, "train")
    texts += rendered["inputs"][:max_texts_per_task] + rendered["targets"][:max_texts_per_task]
  if not texts:
    raise ValueError(f"mixture {mixture!r} has no train text to learn a vocabulary from")
  return vocab_lib.train_sentencepiece(texts, size, out_path)
