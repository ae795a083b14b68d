"""Evaluation examples of a FLAN task in a data context: one row per (example, template).

The one source of eval examples (no tf.data): the rendered split, tokenised with the task's
vocabulary in that context, in rendered order (example-major, template-minor).

>>> rows = eval_rows(DataContext(toy_vocab="bytes"), "toy_sentiment", "validation")
>>> len(rows), rows[0].template_id, rows[0].options         # 100 examples x 3 templates
(300, 0, ('positive', 'negative'))
>>> rows[0].input_ids[-1]                                    # EOS, never truncated here
1
"""

from __future__ import annotations

import collections
import dataclasses

from flanjax.data import templates as templates_lib
from flanjax.data.context import DataContext
from flanjax.data.tokenize import load_tokenized


@dataclasses.dataclass(frozen=True)
class EvalRow:
  """One rendered eval example: the evaluator truncates `input_ids` and counts what it cut."""

  input_ids: tuple[int, ...]  # EOS included, not truncated
  target: str
  template_id: int
  options: tuple[str, ...]  # () for generation tasks
  input_text: str
  example_index: int
  references: tuple[str, ...] = ()  # every acceptable target, when the task declares them


def eval_rows(
  context: DataContext, task_name: str, split: str, *, max_per_template: int | None = None
) -> list[EvalRow]:
  """Every rendered row of a FLAN task's split in `context` (`max_per_template`: the first N
  rows of each template). Raises KeyError naming the known tasks for a non-FLAN name."""
  rendered = context.rendered_split(task_name, split)
  tokens = load_tokenized(context, task_name, split)
  kept: collections.Counter[int] = collections.Counter()
  rows = []
  for i, template_id in enumerate(rendered["template_id"]):
    if max_per_template is not None and kept[template_id] >= max_per_template:
      continue
    kept[template_id] += 1
    begin, end = tokens.inputs_splits[i], tokens.inputs_splits[i + 1]
    rows.append(
      EvalRow(
        input_ids=tuple(tokens.inputs_values[begin:end].tolist()),
        target=rendered["targets"][i],
        template_id=int(template_id),
        options=tuple(templates_lib.split_options(rendered["options"][i])),
        input_text=rendered["inputs"][i],
        example_index=int(rendered["example_index"][i]),
        references=tuple(rendered["references"][i]),
      )
    )
  return rows
