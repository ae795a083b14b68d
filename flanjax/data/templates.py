"""FLAN templates: Python format strings or Jinja `prompt ||| target`, zero/few-shot, OPTIONS.

Two ways to write a template:

>>> t = parse_template(("{dialogue}\\n\\nBriefly summarize that dialogue.", "{summary}"), 0)
>>> t.render({"dialogue": "A: hi", "summary": "A greets."})
('A: hi\\n\\nBriefly summarize that dialogue.', 'A greets.')
>>> j = parse_template("Review: {{ sentence }} ||| {{ label_text }}", 1)
>>> j.render({"sentence": "great", "label_text": "positive"})
('Review: great', 'positive')

Classification examples carry their answer `options`; `render_example` appends FLAN's
OPTIONS block to the prompt (see its docstring).
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox
import numpy as np

JINJA_SEPARATOR = "|||"
# How `options` survive tf.data: one string, options joined by this separator ("" = no options).
OPTIONS_SEPARATOR = "|||"
OPTIONS_FIELD = "options"
# A template may place the rendered options block itself by referencing this field.
OPTIONS_PLACEHOLDER = "options_"
FEW_SHOT_EXEMPLAR_SEPARATOR = "\n\n"
FEW_SHOT_ANSWER_SEPARATOR = "\n"

# Sandboxed: a template reads example fields; it cannot reach Python internals (no
# `{{ cycler.__init__.__globals__.os.popen(...) }}`), mutate data or call unsafe methods.
_JINJA_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(
  undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


def format_options(options: Sequence[str]) -> str:
  """FLAN's OPTIONS block: `format_options(["no", "yes"]) == "OPTIONS:\\n- no\\n- yes"`."""
  return "OPTIONS:\n" + "\n".join(f"- {option}" for option in options)


def join_options(options: Sequence[str] | None) -> str:
  """Serialises options for tf.data: `join_options(["a", "b"]) == "a|||b"`, None -> ""."""
  return OPTIONS_SEPARATOR.join(options or ())


def split_options(joined: str | bytes) -> list[str]:
  """Inverse of `join_options`: `split_options(b"a|||b") == ["a", "b"]`, "" -> []."""
  if isinstance(joined, bytes):
    joined = joined.decode("utf-8")
  return joined.split(OPTIONS_SEPARATOR) if joined else []


@dataclasses.dataclass(frozen=True)
class Template:
  """One prompt/target pair.

  `syntax` is "format" (Python `str.format` fields, as FLAN writes them) or "jinja"
  (`prompt ||| target` in one string, as prompt template libraries write them). `inverted`
  marks a template that turns the task around (e.g. summary -> dialogue): used for training only.
  """

  prompt: str
  target: str
  template_id: int = 0
  syntax: str = "format"
  inverted: bool = False

  def __post_init__(self):
    if self.syntax not in ("format", "jinja"):
      raise ValueError(f"template syntax must be 'format' or 'jinja', got {self.syntax!r}")

  @functools.cached_property
  def fields(self) -> frozenset[str]:
    """Top-level example fields the template reads (`{a.b}` and `{a[0]}` read `a`)."""
    if self.syntax == "jinja":
      names: set[str] = set()
      for text in (self.prompt, self.target):
        names |= jinja2.meta.find_undeclared_variables(_JINJA_ENV.parse(text))
      return frozenset(names)
    names = set()
    for text in (self.prompt, self.target):
      for _, field_name, _, _ in string.Formatter().parse(text):
        if field_name:
          names.add(field_name.split(".")[0].split("[")[0])
    return frozenset(names)

  def render(self, example: Mapping[str, Any]) -> tuple[str, str]:
    """Returns (prompt, target) for one example; a missing field raises KeyError naming it."""
    if self.syntax == "jinja":
      try:
        prompt = _compiled(self.prompt).render(**example)
        target = _compiled(self.target).render(**example)
      except jinja2.UndefinedError as error:
        raise KeyError(str(error)) from None
      except jinja2.exceptions.SecurityError as error:
        raise ValueError(
          f"template {self.template_id} is unsafe and was not run ({error}): a template may only "
          "read the example's fields"
        ) from None
      return prompt.strip(), target.strip()
    return self.prompt.format(**example), self.target.format(**example)


@functools.lru_cache(maxsize=4096)
def _compiled(text: str) -> jinja2.Template:
  return _JINJA_ENV.from_string(text)


def parse_template(spec: Any, template_id: int) -> Template:
  """Builds a Template from a user spec.

  Accepted specs: a `Template` (its id is replaced), a tuple `(prompt, target)` or
  `(prompt, target, {"inverted": True})` of format strings, or one Jinja string
  `"prompt ||| target"`.
  >>> parse_template(("Q: {q}", "{a}"), 3).template_id
  3
  """
  if isinstance(spec, Template):
    return dataclasses.replace(spec, template_id=template_id)
  if isinstance(spec, str):
    if spec.count(JINJA_SEPARATOR) != 1:
      raise ValueError(
        f"template {template_id}: a Jinja template needs exactly one '{JINJA_SEPARATOR}' between "
        f"prompt and target, got {spec!r}"
      )
    prompt, target = spec.split(JINJA_SEPARATOR)
    return Template(prompt, target, template_id, syntax="jinja")
  if isinstance(spec, tuple | list) and len(spec) in (2, 3):
    options = dict(spec[2]) if len(spec) == 3 else {}
    syntax = options.pop("syntax", "format")
    inverted = bool(options.pop("inverted", False))
    if options:
      raise ValueError(f"template {template_id}: unknown template options {sorted(options)}")
    return Template(spec[0], spec[1], template_id, syntax=syntax, inverted=inverted)
  raise TypeError(
    f"template {template_id}: expected (prompt, target), 'prompt ||| target' or Template, "
    f"got {type(spec).__name__}"
  )


def inverted(prompt: str, target: str) -> tuple[str, str, dict[str, bool]]:
  """Marks a format template as an input inversion (training only).

  >>> inverted("Write a dialogue about: {summary}", "{dialogue}")[2]
  {'inverted': True}
  """
  return (prompt, target, {"inverted": True})


def check_template_fields(
  task_name: str, templates: Sequence[Template], available: set[str] | frozenset[str], where: str
) -> None:
  """Raises ValueError naming task, template and field when a template reads a missing field."""
  available = set(available) | {OPTIONS_PLACEHOLDER}
  for template in templates:
    missing = sorted(template.fields - available)
    if missing:
      raise ValueError(
        f"task {task_name!r}: template {template.template_id} ({template.prompt[:60]!r}...) "
        f"references field(s) {missing} that {where} does not have; available fields: "
        f"{sorted(available - {OPTIONS_PLACEHOLDER})}"
      )


def render_example(
  template: Template,
  example: Mapping[str, Any],
  *,
  add_options: bool = True,
  task_name: str = "?",
) -> tuple[str, str, list[str]]:
  """Renders one example with its answer options.

  Returns (prompt, target, options). When the example has an `options` list (classification),
  the target must be one of them and the OPTIONS block is appended (or put where the template
  writes `{options_}`). Inverted templates never get options.
  >>> t = Template("{s}\\nIs it positive?", "{label_text}")
  >>> render_example(t, {"s": "fun", "label_text": "yes", "options": ["no", "yes"]})
  ('fun\\nIs it positive?\\n\\nOPTIONS:\\n- no\\n- yes', 'yes', ['no', 'yes'])
  """
  options = list(example.get(OPTIONS_FIELD) or ())
  if template.inverted:
    options = []
  options_block = format_options(options) if options and add_options else ""
  fields = dict(example)
  fields[OPTIONS_PLACEHOLDER] = options_block
  prompt, target = template.render(fields)
  if options:
    if target not in options:
      raise ValueError(
        f"task {task_name!r}: template {template.template_id} renders target {target!r} which is "
        f"not one of the options {options}"
      )
    if add_options and OPTIONS_PLACEHOLDER not in template.fields:
      prompt = f"{prompt}\n\n{options_block}"
  return prompt, target, options


def choose_exemplars(
  num_train: int, num_shots: int, key: int, seed: int, exclude: int | None = None
) -> list[int]:
  """Deterministic few-shot exemplar indices into the train split.

  The same (key, seed) always gives the same exemplars; `exclude` (the example's own index when
  it comes from the train split) is never chosen.
  >>> choose_exemplars(10, 2, key=4, seed=0, exclude=4) == choose_exemplars(10, 2, 4, 0, 4)
  True
  """
  pool = num_train - (1 if exclude is not None and 0 <= exclude < num_train else 0)
  if num_shots > pool:
    raise ValueError(f"{num_shots}-shot needs {num_shots} train exemplars, only {pool} available")
  rng = np.random.default_rng([seed, key, 7919])
  picks = rng.choice(num_train, size=min(num_train, num_shots + 1), replace=False)
  return [int(i) for i in picks if i != exclude][:num_shots]


def render_few_shot(
  template: Template,
  example: Mapping[str, Any],
  exemplars: Sequence[Mapping[str, Any]],
  *,
  add_options: bool = True,
  task_name: str = "?",
) -> tuple[str, str, list[str]]:
  """FLAN few-shot: k solved exemplars (same template), then the example's prompt.

  >>> t = Template("Q: {q}", "{a}")
  >>> render_few_shot(t, {"q": "2+2", "a": "4"}, [{"q": "1+1", "a": "2"}])
  ('Q: 1+1\\n2\\n\\nQ: 2+2', '4', [])
  """
  parts = []
  for exemplar in exemplars:
    shot_prompt, shot_target, _ = render_example(
      template, exemplar, add_options=add_options, task_name=task_name
    )
    parts.append(f"{shot_prompt}{FEW_SHOT_ANSWER_SEPARATOR}{shot_target}")
  prompt, target, options = render_example(
    template, example, add_options=add_options, task_name=task_name
  )
  parts.append(prompt)
  return FEW_SHOT_EXEMPLAR_SEPARATOR.join(parts), target, options
