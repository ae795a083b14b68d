"""flanjax data side: sources -> templates -> tasks -> data context -> mixtures -> numpy batches.

TensorFlow and seqio are imported here (and only on this side of the project). The data dir and
vocabularies are a `DataContext` passed explicitly (`DEFAULT`: env FLANJAX_DATA_DIR, bytes):

>>> import mixtures                                   # registers every shipped task, reads no file
>>> from flanjax.data import DEFAULT, DataContext
>>> DataContext(data_dir="../shared/data").task_names("flan_mini_eval_sentiment")
['sst2']
"""

from flanjax.data import _quiet  # noqa: F401  (first: TensorFlow imported without C++ chatter)
from flanjax.data.context import DEFAULT, DataContext
from flanjax.data.registry import (
  excluded_categories,
  holdout_mixture_name,
  register_flan_mixtures,
  register_flan_task,
  register_flan_tasks,
)
from flanjax.data.sources import DATA_DIR_ENV
from flanjax.data.tasks import CATEGORIES, TaskInfo, TaskSpec, get_task_info, list_flan_tasks
from flanjax.data.templates import Template, inverted, split_options

__all__ = [
  "CATEGORIES",
  "DATA_DIR_ENV",
  "DEFAULT",
  "DataContext",
  "TaskInfo",
  "TaskSpec",
  "Template",
  "excluded_categories",
  "get_task_info",
  "holdout_mixture_name",
  "inverted",
  "list_flan_tasks",
  "register_flan_mixtures",
  "register_flan_task",
  "register_flan_tasks",
  "split_options",
]
