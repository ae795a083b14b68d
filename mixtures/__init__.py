"""`import mixtures` registers every shipped FLAN task and mixture once.

- `mixtures.flan_mini`: one real task per dataset of the data dir (`FLANJAX_DATA_DIR`), mixtures
  `flan_mini`, `flan_mini_holdout_<category>`, `flan_mini_eval_<category>`.
- `mixtures.toy`: the synthetic `toy_*` tasks (no files), mixtures `toy`, `toy_holdout_<category>`,
  `toy_eval_<category>`: the default for `make demo`.
"""

from mixtures import flan_mini, toy  # noqa: F401  (registration happens on import)
