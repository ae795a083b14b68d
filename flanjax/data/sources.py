"""Where raw examples come from: a local dataset folder or a Hugging Face hub dataset.

Local layout (as in `../shared/data`): `<data_dir>/<dataset>/{train,validation,test}.jsonl`
(or `.parquet`), one JSON object per line with the dataset's original field names.

The data dir is resolved when data is first read (never at import), from, in order:
`set_data_dir(path)` (the launcher passes `config.data_dir`), else env `FLANJAX_DATA_DIR`.

>>> source = LocalSource("sst2")            # <data_dir>/sst2
>>> source.load("validation")[0]            # doctest: +SKIP
{'sentence': "it 's a charming and often affecting journey . ", 'label': 1}
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

DATA_DIR_ENV = "FLANJAX_DATA_DIR"
SPLITS = ("train", "validation", "test")
_FILE_SUFFIXES = (".jsonl", ".parquet")

_data_dir_override: str | None = None
_lock = threading.Lock()


def set_data_dir(path: str | os.PathLike | None) -> None:
  """Sets the data dir for every local source (None: back to env `FLANJAX_DATA_DIR`)."""
  global _data_dir_override
  _data_dir_override = None if path is None else os.fspath(path)
  LocalSource.clear_cache()


def get_data_dir(required: bool = True) -> str | None:
  """The configured data dir; raises a clear error when `required` and nothing is set."""
  path = _data_dir_override or os.environ.get(DATA_DIR_ENV)
  if required and not path:
    raise FileNotFoundError(
      f"no data dir configured: set env {DATA_DIR_ENV} (e.g. ../shared/data), pass "
      "config.data_dir, or call flanjax.data.set_data_dir(path)"
    )
  return path


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a JSONL file; a malformed line raises ValueError with the file and line number."""
  records = []
  with open(path, encoding="utf-8") as handle:
    for line_number, line in enumerate(handle, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{line_number}: malformed JSON line: {error.msg}") from None
      if not isinstance(record, dict):
        raise ValueError(
          f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}"
        )
      records.append(record)
  return records


def _first_jsonl_record(path: str) -> dict[str, Any] | None:
  with open(path, encoding="utf-8") as handle:
    for line_number, line in enumerate(handle, start=1):
      if line.strip():
        try:
          return json.loads(line)
        except json.JSONDecodeError as error:
          raise ValueError(f"{path}:{line_number}: malformed JSON line: {error.msg}") from None
  return None


def _read_parquet(path: str) -> list[dict[str, Any]]:
  import pyarrow.parquet as pq  # Lazy: only parquet users pay for the import.

  return pq.read_table(path).to_pylist()


class LocalSource:
  """A dataset folder holding `{train,validation,test}.{jsonl,parquet}`.

  `folder` is absolute, or a name under the data dir. Records are read once and cached.
  """

  _cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

  def __init__(self, folder: str | os.PathLike, splits: Sequence[str] = SPLITS):
    self.folder = os.fspath(folder)
    self.declared_splits = tuple(splits)

  def __repr__(self):
    return f"LocalSource({self.folder!r})"

  @classmethod
  def clear_cache(cls) -> None:
    cls._cache.clear()

  def path(self, required: bool = True) -> str | None:
    if os.path.isabs(self.folder):
      return self.folder
    data_dir = get_data_dir(required=required)
    return os.path.join(data_dir, self.folder) if data_dir else None

  def is_available(self) -> bool:
    path = self.path(required=False)
    return bool(path) and not path.startswith(HUB_DATA_DIR) and os.path.isdir(path)

  def _require_dir(self) -> str:
    path = self.path()
    if not os.path.isdir(path):
      raise FileNotFoundError(
        f"dataset folder {path!r} not found: expected <data_dir>/{self.folder}/"
        f"{{train,validation,test}}.jsonl with the data dir from env {DATA_DIR_ENV} "
        f"(currently {os.environ.get(DATA_DIR_ENV)!r}) or flanjax.data.set_data_dir"
      )
    return path

  def split_file(self, split: str) -> str | None:
    folder = self._require_dir()
    for suffix in _FILE_SUFFIXES:
      candidate = os.path.join(folder, split + suffix)
      if os.path.exists(candidate):
        return candidate
    return None

  @property
  def splits(self) -> tuple[str, ...]:
    """Splits with a file; the declared splits while the folder cannot be seen."""
    if not self.is_available():
      return self.declared_splits
    return tuple(s for s in self.declared_splits if self.split_file(s))

  def load(self, split: str) -> list[dict[str, Any]]:
    path = self.split_file(split)
    if path is None:
      raise ValueError(
        f"{self._require_dir()}: no split {split!r} (files for: {list(self.splits)})"
      )
    key = (path, split)
    with _lock:
      if key not in self._cache:
        records = _read_parquet(path) if path.endswith(".parquet") else read_jsonl(path)
        if not records:
          raise ValueError(f"{path}: split {split!r} is empty")
        self._cache[key] = records
      return self._cache[key]

  def peek(self, split: str) -> dict[str, Any] | None:
    """The first record of a split without reading the whole file (None if no file)."""
    path = self.split_file(split)
    if path is None:
      return None
    if path.endswith(".parquet"):
      return self.load(split)[0]
    record = _first_jsonl_record(path)
    if record is None:
      raise ValueError(f"{path}: split {split!r} is empty")
    return record

  def count(self, split: str) -> int:
    path = self.split_file(split)
    if path is None:
      return 0
    if path.endswith(".parquet"):
      return len(self.load(split))
    with open(path, "rb") as handle:
      return sum(1 for line in handle if line.strip())


class HFSource:
  """A Hugging Face hub dataset loaded with `datasets.load_dataset` (needs network or HF cache).

  `split_map` maps our split names to the hub's (e.g. {"validation": "dev"}); `rename` maps hub
  field names to the local layout's, so the same templates and preprocessing work on both.
  >>> HFSource("nyu-mll/glue", "sst2").splits
  ('train', 'validation', 'test')
  """

  _cache: dict[tuple, list[dict[str, Any]]] = {}

  def __init__(
    self,
    name: str,
    config: str | None = None,
    split_map: Mapping[str, str] | None = None,
    rename: Mapping[str, str] | None = None,
    **load_kwargs: Any,
  ):
    self.name = name
    self.config = config
    self.split_map = dict(split_map or {s: s for s in SPLITS})
    self.rename = dict(rename or {})
    self.load_kwargs = load_kwargs

  def __repr__(self):
    return f"HFSource({self.name!r}, {self.config!r})"

  def is_available(self) -> bool:
    return False  # Never touch the network at registration; checks run when data is loaded.

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.split_map)

  def load(self, split: str) -> list[dict[str, Any]]:
    if split not in self.split_map:
      raise ValueError(f"{self!r}: no split {split!r} (split_map has {list(self.split_map)})")
    key = (self.name, self.config, split)
    if key not in self._cache:
      import datasets  # Lazy: keeps `import mixtures` light and offline.

      dataset = datasets.load_dataset(
        self.name, self.config, split=self.split_map[split], **self.load_kwargs
      )
      records = [{self.rename.get(k, k): v for k, v in row.items()} for row in dataset]
      if not records:
        raise ValueError(f"{self!r}: split {split!r} is empty")
      self._cache[key] = records
    return self._cache[key]

  def peek(self, split: str) -> dict[str, Any] | None:
    return self.load(split)[0] if split in self.split_map else None

  def count(self, split: str) -> int:
    return len(self.load(split)) if split in self.split_map else 0


def make_source(spec: Any) -> LocalSource | HFSource:
  """`"sst2"` or `"/abs/dir"` -> LocalSource; `"hf:glue/sst2"` -> HFSource; sources pass through.

  >>> make_source("hf:nyu-mll/glue:sst2")
  HFSource('nyu-mll/glue', 'sst2')
  """
  if isinstance(spec, LocalSource | HFSource):
    return spec
  if isinstance(spec, os.PathLike):
    return LocalSource(spec)
  if isinstance(spec, str):
    if spec.startswith("hf:"):
      name, _, config = spec[3:].partition(":")
      return HFSource(name, config or None)
    return LocalSource(spec)
  raise TypeError(
    f"source must be a folder name/path, 'hf:name[:config]' or a source, got {spec!r}"
  )


HUB_DATA_DIR = "hf:"


class LocalOrHubSource:
  """The local folder `<data_dir>/<name>`, or its hub twin when the data dir is `"hf:"`.

  Users who are online set `FLANJAX_DATA_DIR=hf:` (or `set_data_dir("hf:")`) to load the same
  datasets by their hub names; preprocessing handles both field layouts.
  """

  def __init__(self, name: str, hub: HFSource | None = None, splits: Sequence[str] = SPLITS):
    self.local = LocalSource(name, splits)
    self.hub = hub

  def _active(self) -> LocalSource | HFSource:
    if get_data_dir(required=False) == HUB_DATA_DIR:
      if self.hub is None:
        raise ValueError(f"dataset {self.local.folder!r} has no hub source; use a local data dir")
      return self.hub
    return self.local

  def __repr__(self):
    return repr(self._active())

  def is_available(self) -> bool:
    return self._active().is_available()

  @property
  def splits(self) -> tuple[str, ...]:
    return self._active().splits

  def load(self, split: str) -> list[dict[str, Any]]:
    return self._active().load(split)

  def peek(self, split: str) -> dict[str, Any] | None:
    return self._active().peek(split)

  def count(self, split: str) -> int:
    return self._active().count(split)
