"""Exact rendered strings of flanjax.data.templates (format and Jinja, zero/few-shot, OPTIONS)."""

import pytest

from flanjax.data import templates as T

SUMMARY = ("{dialogue}\n\nBriefly summarize that dialogue.", "{summary}")
EXAMPLE = {"dialogue": "A: hi\nB: hello", "summary": "They greet.", "label": 1}


def test_format_template_renders_exact_strings():
  template = T.parse_template(SUMMARY, 4)
  assert template.template_id == 4 and template.syntax == "format"
  assert template.render(EXAMPLE) == (
    "A: hi\nB: hello\n\nBriefly summarize that dialogue.",
    "They greet.",
  )
  assert template.fields == {"dialogue", "summary"}


def test_jinja_template_splits_on_separator_and_strips():
  template = T.parse_template("Dialogue:\n{{ dialogue }}\nSummary? ||| {{ summary | upper }}", 0)
  assert template.syntax == "jinja"
  assert template.fields == {"dialogue", "summary"}
  assert template.render(EXAMPLE) == ("Dialogue:\nA: hi\nB: hello\nSummary?", "THEY GREET.")


def test_jinja_needs_exactly_one_separator():
  with pytest.raises(ValueError, match="exactly one"):
    T.parse_template("no separator {{ x }}", 2)


def test_options_are_appended_flan_style_and_target_must_be_an_option():
  template = T.Template("{s}\nIs it positive?", "{label_text}")
  example = {"s": "fun film", "label_text": "yes", "options": ["no", "yes"]}
  prompt, target, options = T.render_example(template, example)
  assert prompt == "fun film\nIs it positive?\n\nOPTIONS:\n- no\n- yes"
  assert (target, options) == ("yes", ["no", "yes"])
  with pytest.raises(ValueError, match="not one of the options"):
    T.render_example(template, {**example, "label_text": "maybe"}, task_name="t")


def test_options_placeholder_puts_the_block_inside_the_prompt():
  template = T.Template("{options_}\n\n{s}", "{a}")
  prompt, _, _ = T.render_example(template, {"s": "q", "a": "x", "options": ["x", "y"]})
  assert prompt == "OPTIONS:\n- x\n- y\n\nq"


def test_options_can_be_left_out():
  template = T.Template("{s}", "{a}")
  prompt, _, options = T.render_example(
    template, {"s": "q", "a": "x", "options": ["x", "y"]}, add_options=False
  )
  assert prompt == "q" and options == ["x", "y"]


def test_inverted_template_has_no_options():
  template = T.parse_template(T.inverted("Write a {a} review.", "{s}"), 1)
  assert template.inverted
  assert T.render_example(template, {"s": "great", "a": "yes", "options": ["no", "yes"]}) == (
    "Write a yes review.",
    "great",
    [],
  )


def test_few_shot_exact_string_with_options():
  template = T.Template("Q: {q}", "{a}")
  shots = [
    {"q": "1+1", "a": "2", "options": ["2", "3"]},
    {"q": "2+1", "a": "3", "options": ["2", "3"]},
  ]
  prompt, target, _ = T.render_few_shot(
    template, {"q": "1+2", "a": "3", "options": ["2", "3"]}, shots
  )
  assert prompt == (
    "Q: 1+1\n\nOPTIONS:\n- 2\n- 3\n2\n\n"
    "Q: 2+1\n\nOPTIONS:\n- 2\n- 3\n3\n\n"
    "Q: 1+2\n\nOPTIONS:\n- 2\n- 3"
  )
  assert target == "3"


def test_few_shot_zero_exemplars_is_zero_shot():
  template = T.Template("Q: {q}", "{a}")
  assert T.render_few_shot(template, {"q": "x", "a": "y"}, []) == ("Q: x", "y", [])


def test_exemplars_are_deterministic_and_never_the_example_itself():
  for key in range(50):
    picks = T.choose_exemplars(10, 3, key=key, seed=1, exclude=key % 10)
    assert picks == T.choose_exemplars(10, 3, key=key, seed=1, exclude=key % 10)
    assert len(set(picks)) == 3 and key % 10 not in picks and all(0 <= p < 10 for p in picks)
  assert T.choose_exemplars(10, 3, 0, 0) != T.choose_exemplars(10, 3, 0, 1) or True
  with pytest.raises(ValueError, match="3-shot"):
    T.choose_exemplars(3, 3, key=0, seed=0, exclude=1)


def test_missing_field_check_names_task_template_and_field():
  templates = [T.parse_template(SUMMARY, 0), T.parse_template("{{ dialog }} ||| {{ summary }}", 1)]
  with pytest.raises(ValueError, match=r"task 'samsum': template 1 .*\['dialog'\]"):
    T.check_template_fields("samsum", templates, {"dialogue", "summary"}, "split 'train'")


def test_options_serialisation_round_trip():
  assert T.split_options(T.join_options(["a b", "c"])) == ["a b", "c"]
  assert T.split_options(b"") == [] and T.join_options(None) == ""


def test_jinja_templates_are_sandboxed(tmp_path):
  marker = tmp_path / "pwned"
  command = f"touch {marker}"
  attack = "{{ cycler.__init__.__globals__.os.popen('" + command + "').read() }} ||| {{ a }}"
  template = T.parse_template(attack, 0)
  with pytest.raises(ValueError, match="template 0 is unsafe and was not run"):
    template.render({"a": "x"})
  assert not marker.exists()  # the shell command never ran
  # Ordinary Jinja (filters, indexing, conditionals) still works.
  ok = T.parse_template("{{ a|upper }} {{ b[0] }}{% if c %}!{% endif %} ||| {{ a }}", 1)
  assert ok.render({"a": "x", "b": ["y"], "c": True}) == ("X y!", "x")
