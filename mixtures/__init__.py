"""`import mixtures` registers every shipped FLAN task and mixture once.

Every module in this package is imported (in name order, private `_*` modules skipped), so a
new file here is picked up without editing this one:
- `mixtures.flan_mini`: one real task per dataset of the data dir (`FLANJAX_DATA_DIR`), mixtures
  `flan_mini`, `flan_mini_holdout_<category>`, `flan_mini_eval_<category>`.
- `mixtures.toy`: the synthetic `toy_*` tasks (no files), mixtures `toy`, `toy_holdout_<category>`,
  `toy_eval_<category>`: the default for `make demo`.
Tasks of your own can also live outside the repo: `tools/launch.py CMD --import my_tasks` (a
module name on the path, or a path to a .py file) imports them for any command.
"""

import importlib
import pkgutil

import flanjax.data  # noqa: F401  (first: TensorFlow imported without its C++ start-up chatter)

MODULES = tuple(
  importlib.import_module(f"{__name__}.{info.name}")
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
  if not info.name.startswith("_")
)
