"""The held-out benchmarks' fixed tables: subjects, tasks, languages and their published groups.

Pure data (no file is read): the data side registers one task per row, the eval side rolls scores
up by these groups (`flanjax.eval.compare.benchmark_summary`).

>>> len(MMLU_GROUPS), MMLU_GROUPS["abstract_algebra"], MMLU_GROUPS["jurisprudence"]
(57, 'stem', 'humanities')
>>> len(BBH_TASKS), BBH_HALVES["dyck_languages"], BBH_HALVES["snarks"]
(27, 'algorithmic', 'nlp')
>>> task_name("mmlu", "abstract_algebra", "5shot"), parse_task_name("bbh_navigate_cot")
('mmlu_abstract_algebra_5shot', ('bbh', 'navigate', 'cot'))
"""

from __future__ import annotations

BENCHMARK_DIR_ENV = "FLANJAX_BENCHMARK_DIR"
BENCHMARK_FAMILY = "benchmark"

_STEM, _HUM, _SOC, _OTHER = "stem", "humanities", "social_sciences", "other"
# MMLU's 57 subjects -> the four groups of the MMLU paper (Hendrycks et al. 2021; the
# subcategory -> category map of hendrycks/test `categories.py`, as lm-evaluation-harness uses).
MMLU_GROUPS = {
  "abstract_algebra": _STEM,
  "anatomy": _OTHER,
  "astronomy": _STEM,
  "business_ethics": _OTHER,
  "clinical_knowledge": _OTHER,
  "college_biology": _STEM,
  "college_chemistry": _STEM,
  "college_computer_science": _STEM,
  "college_mathematics": _STEM,
  "college_medicine": _OTHER,
  "college_physics": _STEM,
  "computer_security": _STEM,
  "conceptual_physics": _STEM,
  "econometrics": _SOC,
  "electrical_engineering": _STEM,
  "elementary_mathematics": _STEM,
  "formal_logic": _HUM,
  "global_facts": _OTHER,
  "high_school_biology": _STEM,
  "high_school_chemistry": _STEM,
  "high_school_computer_science": _STEM,
  "high_school_european_history": _HUM,
  "high_school_geography": _SOC,
  "high_school_government_and_politics": _SOC,
  "high_school_macroeconomics": _SOC,
  "high_school_mathematics": _STEM,
  "high_school_microeconomics": _SOC,
  "high_school_physics": _STEM,
  "high_school_psychology": _SOC,
  "high_school_statistics": _STEM,
  "high_school_us_history": _HUM,
  "high_school_world_history": _HUM,
  "human_aging": _OTHER,
  "human_sexuality": _SOC,
  "international_law": _HUM,
  "jurisprudence": _HUM,
  "logical_fallacies": _HUM,
  "machine_learning": _STEM,
  "management": _OTHER,
  "marketing": _OTHER,
  "medical_genetics": _OTHER,
  "miscellaneous": _OTHER,
  "moral_disputes": _HUM,
  "moral_scenarios": _HUM,
  "nutrition": _OTHER,
  "philosophy": _HUM,
  "prehistory": _HUM,
  "professional_accounting": _OTHER,
  "professional_law": _HUM,
  "professional_medicine": _OTHER,
  "professional_psychology": _SOC,
  "public_relations": _SOC,
  "security_studies": _SOC,
  "sociology": _SOC,
  "us_foreign_policy": _SOC,
  "virology": _OTHER,
  "world_religions": _HUM,
}
MMLU_SUBJECTS = tuple(sorted(MMLU_GROUPS))
MMLU_GROUP_NAMES = (_STEM, _HUM, _SOC, _OTHER)
MMLU_LETTERS = ("A", "B", "C", "D")

_ALG, _NLP = "algorithmic", "nlp"
# BIG-Bench Hard's 27 task files -> the two halves of Suzgun et al. 2022 (algorithmic tasks are
# the ones the paper marks with a lambda; the 3 logical_deduction and 3 tracking_shuffled_objects
# files are one paper task each: 23 tasks = 11 algorithmic + 12 NLP).
BBH_HALVES = {
  "boolean_expressions": _ALG,
  "causal_judgement": _NLP,
  "date_understanding": _NLP,
  "disambiguation_qa": _NLP,
  "dyck_languages": _ALG,
  "formal_fallacies": _NLP,
  "geometric_shapes": _ALG,
  "hyperbaton": _NLP,
  "logical_deduction_five_objects": _ALG,
  "logical_deduction_seven_objects": _ALG,
  "logical_deduction_three_objects": _ALG,
  "movie_recommendation": _NLP,
  "multistep_arithmetic_two": _ALG,
  "navigate": _ALG,
  "object_counting": _ALG,
  "penguins_in_a_table": _NLP,
  "reasoning_about_colored_objects": _NLP,
  "ruin_names": _NLP,
  "salient_translation_error_detection": _NLP,
  "snarks": _NLP,
  "sports_understanding": _NLP,
  "temporal_sequences": _ALG,
  "tracking_shuffled_objects_five_objects": _ALG,
  "tracking_shuffled_objects_seven_objects": _ALG,
  "tracking_shuffled_objects_three_objects": _ALG,
  "web_of_lies": _ALG,
  "word_sorting": _ALG,
}
BBH_TASKS = tuple(sorted(BBH_HALVES))
BBH_HALF_NAMES = (_NLP, _ALG)

# MGSM's 11 languages (Shi et al. 2022).
MGSM_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")

# Benchmark -> (its modes, the members each mode has one task for, member -> group).
MODES = {
  "mmlu": ("0shot", "5shot"),
  "bbh": ("direct", "cot"),
  "mgsm": ("0shot", "8shot"),
}
MEMBERS = {"mmlu": MMLU_SUBJECTS, "bbh": BBH_TASKS, "mgsm": MGSM_LANGUAGES}
GROUPS = {"mmlu": MMLU_GROUPS, "bbh": BBH_HALVES, "mgsm": {}}
GROUP_NAMES = {"mmlu": MMLU_GROUP_NAMES, "bbh": BBH_HALF_NAMES, "mgsm": ()}
# One report category per benchmark and mode ("mmlu_5shot", ...): a category mean never mixes
# prompting setups, and no training mixture has these categories, so they are always held out.
BENCHMARK_CATEGORIES = tuple(f"{b}_{m}" for b, modes in MODES.items() for m in modes)


def task_name(benchmark: str, member: str, mode: str) -> str:
  """`task_name("mgsm", "de", "8shot") == "mgsm_de_8shot"`."""
  return f"{benchmark}_{member}_{mode}"


def parse_task_name(name: str) -> tuple[str, str, str] | None:
  """(benchmark, member, mode) of a benchmark task name, None for any other name.

  >>> parse_task_name("mmlu_high_school_us_history_0shot"), parse_task_name("sst2")
  (('mmlu', 'high_school_us_history', '0shot'), None)
  """
  benchmark, _, rest = name.partition("_")
  if benchmark not in MODES:
    return None
  member, _, mode = rest.rpartition("_")
  if mode not in MODES[benchmark] or member not in MEMBERS[benchmark]:
    return None
  return benchmark, member, mode
