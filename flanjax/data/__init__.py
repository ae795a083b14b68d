"""flanjax data side: sources -> templates -> seqio tasks -> mixtures -> packed numpy batches.

TensorFlow and seqio are imported here (and only on this side of the project).
"""

from flanjax.data.sources import DATA_DIR_ENV, get_data_dir, set_data_dir
from flanjax.data.tasks import (
  CATEGORIES,
  TaskInfo,
  excluded_categories,
  get_mixture_or_task,
  get_task_info,
  list_flan_tasks,
  register_flan_mixtures,
  register_flan_task,
  task_names_of,
)
from flanjax.data.templates import Template, inverted, split_options

__all__ = [
  "CATEGORIES",
  "DATA_DIR_ENV",
  "TaskInfo",
  "Template",
  "excluded_categories",
  "get_data_dir",
  "get_mixture_or_task",
  "get_task_info",
  "inverted",
  "list_flan_tasks",
  "register_flan_mixtures",
  "register_flan_task",
  "set_data_dir",
  "split_options",
  "task_names_of",
]
