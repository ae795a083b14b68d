"""Where raw examples come from: a local dataset folder or a Hugging Face hub dataset.

Local layout (as in `../shared/data`): `<data_dir>/<dataset>/{train,validation,test}.jsonl`
(or `.parquet`), one JSON object per line with the dataset's original field names.

Sources hold no global state: a folder name is resolved against the data dir it is bound to
(`bind(source, data_dir)`; a `DataContext` binds with its own data dir when data is read).

>>> source = bind(LocalSource("sst2"), "../shared/data")      # ../shared/data/sst2
>>> source.load("validation")[0]                              # doctest: +SKIP
{'sentence': "it 's a charming and often affecting journey . ", 'label': 1}
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

DATA_DIR_ENV = "FLANJAX_DATA_DIR"
HUB_DATA_DIR = "hf:"  # As the data dir: load every dataset's hub twin instead of local files.
SPLITS = ("train", "validation", "test")
_FILE_SUFFIXES = (".jsonl", ".parquet")
_lock = threading.Lock()


def bind(source: Any, data_dir: str | None) -> Any:
  """The source as read under `data_dir`: `source.bind(data_dir)`, or the source itself when it
  does not depend on a data dir (a ToySource, an absolute folder, a user's own source object).

  >>> bind(LocalSource("sst2"), "/data")
  LocalSource('/data/sst2')
  """
  return source.bind(data_dir) if hasattr(source, "bind") else source


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a JSONL file; a malformed line raises ValueError with the file and line number."""
  records = []
  with open(path, "rb") as handle:
    for line_number, raw in enumerate(handle, start=1):
      line = _decode_line(raw, path, line_number)
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


def _decode_line(raw: bytes, path: str, line_number: int) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(
      f"{path}:{line_number}: not UTF-8 (byte {raw[error.start]:#04x} at column "
      f"{error.start + 1}); re-encode the file as UTF-8"
    ) from None


def _first_jsonl_record(path: str) -> dict[str, Any] | None:
  with open(path, "rb") as handle:
    for line_number, raw in enumerate(handle, start=1):
      line = _decode_line(raw, path, line_number)
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

  `folder` is absolute, or a name under `data_dir` (set by `bind`). `split_map` maps our split
  names to file stems (e.g. `{"validation": "dev"}` reads `dev.jsonl`). Records are read once
  and cached per file.
  >>> LocalSource("ds", split_map={"validation": "dev"}).split_map["validation"]
  'dev'
  """

  _cache: dict[str, list[dict[str, Any]]] = {}

  def __init__(
    self,
    folder: str | os.PathLike,
    splits: Sequence[str] = SPLITS,
    split_map: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike | None = None,
  ):
    self.folder = os.fspath(folder)
    self.split_map = dict(split_map or {s: s for s in splits})
    self.declared_splits = tuple(self.split_map)
    self.data_dir = None if data_dir is None else os.fspath(data_dir)

  def __repr__(self):
    return f"LocalSource({self.path(required=False) or self.folder!r})"

  def bind(self, data_dir: str | os.PathLike | None) -> LocalSource:
    """This folder under `data_dir` (an absolute folder ignores it)."""
    return LocalSource(self.folder, split_map=self.split_map, data_dir=data_dir)

  @classmethod
  def clear_cache(cls) -> None:
    cls._cache.clear()

  def path(self, required: bool = True) -> str | None:
    if os.path.isabs(self.folder):
      return self.folder
    if not self.data_dir:
      if required:
        raise FileNotFoundError(
          f"dataset {self.folder!r}: no data dir configured; set config.data_dir or env "
          f"{DATA_DIR_ENV} (e.g. ../shared/data), or pass DataContext(data_dir=...)"
        )
      return None
    return os.path.join(self.data_dir, self.folder)

  def is_available(self) -> bool:
    path = self.path(required=False)
    return bool(path) and not path.startswith(HUB_DATA_DIR) and os.path.isdir(path)

  def _require_dir(self) -> str:
    path = self.path()
    if not os.path.isdir(path):
      raise FileNotFoundError(
        f"dataset folder {path!r} not found: expected <data_dir>/{self.folder}/"
        f"{{train,validation,test}}.jsonl with the data dir {self.data_dir!r} from "
        f"config.data_dir or env {DATA_DIR_ENV}"
      )
    return path

  def split_file(self, split: str) -> str | None:
    folder = self._require_dir()
    if split not in self.split_map:
      return None
    for suffix in _FILE_SUFFIXES:
      candidate = os.path.join(folder, self.split_map[split] + suffix)
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
    with _lock:
      if path not in self._cache:
        records = _read_parquet(path) if path.endswith(".parquet") else read_jsonl(path)
        if not records:
          raise ValueError(f"{path}: split {split!r} is empty")
        self._cache[path] = records
      return self._cache[path]

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


class LocalOrHubSource:
  """The local folder `<data_dir>/<name>`, or its hub twin when the data dir is `"hf:"`.

  Users who are online set the data dir to `hf:` to load the same datasets by their hub names;
  preprocessing handles both field layouts.
  >>> LocalOrHubSource("sst2", HFSource("nyu-mll/glue", "sst2")).bind("hf:")
  HFSource('nyu-mll/glue', 'sst2')
  """

  def __init__(self, name: str, hub: HFSource | None = None, splits: Sequence[str] = SPLITS):
    self.local = LocalSource(name, splits)
    self.hub = hub

  def __repr__(self):
    return f"LocalOrHubSource({self.local.folder!r})"

  @property
  def splits(self) -> tuple[str, ...]:
    return self.local.declared_splits

  def bind(self, data_dir: str | os.PathLike | None) -> LocalSource | HFSource:
    if data_dir is not None and os.fspath(data_dir) == HUB_DATA_DIR:
      if self.hub is None:
        raise ValueError(f"dataset {self.local.folder!r} has no hub source; use a local data dir")
      return self.hub
    return self.local.bind(data_dir)


SELECTION_SPLIT = "selection"
MIN_TRAIN_ROWS = 20


class SelectionSplitSource:
  """FLAN's template-selection split for a dataset that lacks a validation or a test split.

  FLAN reports GLUE-style sets (no labelled test) on their dev set and chooses the best template
  on the last 200 training examples instead; those rows then leave the train split, so the
  model never trains on what selects its template. Datasets with train, validation and test are
  passed through unchanged (selection happens on validation).

  >>> class Rows:
  ...   splits = ("train", "validation")
  ...   def load(self, split): return [{"i": i} for i in range(1000)]
  ...   def count(self, split): return 1000
  >>> source = SelectionSplitSource(Rows(), rows=200)
  >>> source.splits, source.count("train"), source.load("selection")[0]
  (('train', 'validation', 'selection'), 800, {'i': 800})
  """

  def __init__(self, inner: Any, rows: int = 200):
    self.inner = inner
    self.rows = rows
    self._taken: int | None = None  # counted once: `splits` is asked often

  def __repr__(self):
    return repr(self.inner)

  def bind(self, data_dir: str | None) -> SelectionSplitSource:
    return SelectionSplitSource(bind(self.inner, data_dir), self.rows)

  def is_available(self) -> bool:
    return self.inner.is_available()

  def _needed(self) -> bool:
    splits = set(self.inner.splits)
    return self.rows > 0 and "train" in splits and not {"validation", "test"} <= splits

  @property
  def _has_selection(self) -> bool:
    return self._selection_rows() > 0

  def _selection_rows(self) -> int:
    """At most `rows`, never more than a quarter of train, none for a train split under
    `MIN_TRAIN_ROWS` (too small to spare any: the template is then chosen on the reported
    split, and the report says so)."""
    if self._taken is None:
      if not self._needed():
        self._taken = 0
      else:
        total = self.inner.count("train")
        self._taken = min(self.rows, total // 4) if total >= MIN_TRAIN_ROWS else 0
    return self._taken

  @property
  def splits(self) -> tuple[str, ...]:
    inner = tuple(self.inner.splits)
    return inner + (SELECTION_SPLIT,) if self._has_selection else inner

  def load(self, split: str) -> list[dict[str, Any]]:
    taken = self._selection_rows()
    if split == SELECTION_SPLIT:
      if not taken:
        raise ValueError(f"{self!r}: no split {split!r} (it has {list(self.inner.splits)})")
      return self.inner.load("train")[-taken:]
    records = self.inner.load(split)
    return records[:-taken] if split == "train" and taken else records

  def peek(self, split: str) -> dict[str, Any] | None:
    if split in (SELECTION_SPLIT, "train") and self._selection_rows():
      return self.load(split)[0]
    return self.inner.peek(split)

  def count(self, split: str) -> int:
    taken = self._selection_rows()
    if split == SELECTION_SPLIT:
      return taken
    return self.inner.count(split) - (taken if split == "train" else 0)
