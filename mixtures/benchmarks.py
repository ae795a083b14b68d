"""Registers the held-out benchmarks (`flanjax.data.benchmarks`): eval-only tasks and mixtures.

Tasks `mmlu_<subject>_{0shot,5shot}`, `bbh_<task>_{direct,cot}`, `mgsm_<lang>_{0shot,8shot}`
(family "benchmark", split "test" only); mixtures `mmlu`, `mmlu_0shot`, `mmlu_5shot`, `bbh`,
`bbh_direct`, `bbh_cot`, `mgsm`, `mgsm_0shot`, `mgsm_8shot`, `benchmarks`. No FLAN training
mixture lists them (flan_mini and toy are built from their own task tables), and having no
"train" split they give no training rows. Registration reads no file.

Command: `FLANJAX_BENCHMARK_DIR=../shared/benchmarks python tools/launch.py show
--task bbh_navigate_cot --split test -n 1`.
"""

from __future__ import annotations

import seqio

from flanjax.data import benchmarks, registry

TASKS = registry.register_flan_tasks(benchmarks.benchmark_specs())
MIXTURES = [
  seqio.MixtureRegistry.add(name, [(task, 1.0) for task in names]).name
  for name, names in benchmarks.BENCHMARK_MIXTURES.items()
]
