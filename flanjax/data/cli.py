"""What `tools/launch.py tasks | show | vocab` do (the launcher only parses flags).

>>> list_tasks()                     # doctest: +SKIP
task            family category                    templates metrics       train validation test
cb              flan   natural_language_inference  6        accuracy      250   56         -
...
>>> show_task("sst2", n=1)           # doctest: +SKIP
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

SPLITS = sources_lib.SPLITS


def _row_counts(name: str) -> list[str]:
  source = tasks_lib.get_task_spec(name).source
  try:
    available = set(source.splits) if source.is_available() else None
    if available is None:
      return ["?"] * len(SPLITS)
    return [str(source.count(s)) if s in available else "-" for s in SPLITS]
  except (FileNotFoundError, ValueError):
    return ["?"] * len(SPLITS)


def list_tasks(out: TextIO = sys.stdout) -> None:
  """Prints every FLAN task (category, templates, metrics, rows per split), then the mixtures.

  "?" means the data dir is not reachable (set FLANJAX_DATA_DIR); "-" that the split is absent.
  """
  header = ["task", "family", "category", "templates", "metrics", *SPLITS]
  rows = []
  for name in tasks_lib.list_flan_tasks():
    info = tasks_lib.get_task_info(name)
    rows.append(
      [
        name,
        info.family,
        info.category,
        str(len(info.template_ids)),
        ",".join(info.metrics),
        *_row_counts(name),
      ]
    )
  _print_table(header, rows, out)
  out.write(f"\ncategories: {', '.join(tasks_lib.CATEGORIES)}\n\n")
  mixture_rows = []
  for name in sorted(seqio.MixtureRegistry.names()):
    mixture = seqio.MixtureRegistry.get(name)
    members = [t.name for t in mixture.tasks]
    if not all(m in tasks_lib.list_flan_tasks() for m in members):
      continue
    counts = [_row_counts(m)[0] for m in members]
    train_rows = sum(int(c) for c in counts if c.isdigit())
    unknown = any(c == "?" for c in counts)
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


def show_task(name: str, n: int = 3, split: str = "validation", out: TextIO = sys.stdout) -> None:
  """Prints the first `n` examples of a split rendered with every template it uses there."""
  spec = tasks_lib.get_task_spec(name)
  if split not in spec.source.splits:
    raise ValueError(f"task {name!r} has no split {split!r}; splits: {list(spec.source.splits)}")
  rendered = spec.render_split(split)
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


def train_vocab(mixture: str, size: int, out_path: str, max_texts_per_task: int = 20_000) -> str:
  """Trains a T5-style SentencePiece model (pad 0, eos 1, unk 2; +100 sentinels when loaded by
  `vocab.get_vocabulary(out_path)`) on the rendered train inputs and targets of a mixture."""
  texts = []
  for name in tasks_lib.task_names_of(mixture):
    spec = tasks_lib.get_task_spec(name)
    if "train" not in spec.source.splits:
      continue
    rendered = spec.render_split("train")
    texts += rendered["inputs"][:max_texts_per_task] + rendered["targets"][:max_texts_per_task]
  if not texts:
    raise ValueError(f"mixture {mixture!r} has no train text to learn a vocabulary from")
  return vocab_lib.train_sentencepiece(texts, size, out_path)
