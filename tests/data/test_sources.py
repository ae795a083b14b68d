"""Bad input of flanjax.data.sources: missing data dir, malformed JSONL, empty split."""

import json

import pytest

from flanjax.data import sources
from flanjax.data.context import DataContext


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))


def test_missing_data_dir_names_expected_path_and_env(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "nowhere"))
  data_dir = DataContext().resolved_data_dir()  # The env is read here, when data is read.
  source = sources.bind(sources.LocalSource("sst2"), data_dir)
  assert not source.is_available()
  with pytest.raises(FileNotFoundError, match=r"nowhere/sst2.*FLANJAX_DATA_DIR"):
    source.load("train")


def test_unset_data_dir_names_the_env(monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="config.data_dir.*FLANJAX_DATA_DIR"):
    sources.LocalSource("sst2").load("train")
  with pytest.raises(FileNotFoundError, match="config.data_dir.*FLANJAX_DATA_DIR"):
    DataContext().resolved_data_dir()
  assert DataContext().resolved_data_dir(required=False) is None
  assert DataContext(data_dir="/d").resolved_data_dir() == "/d"


def test_absolute_folder_needs_no_data_dir_and_split_map_names_files(tmp_path):
  folder = tmp_path / "ds"
  folder.mkdir()
  _write(folder / "dev.jsonl", [json.dumps({"x": 1})])
  source = sources.LocalSource(str(folder), split_map={"validation": "dev"})
  assert sources.bind(source, "/elsewhere").load("validation") == [{"x": 1}]
  assert source.splits == ("validation",) and source.count("validation") == 1
  assert sources.bind(sources.LocalSource("ds"), str(tmp_path)).splits == ()


def test_malformed_line_reports_file_and_line(tmp_path):
  (tmp_path / "ds").mkdir()
  _write(tmp_path / "ds" / "train.jsonl", [json.dumps({"a": 1}), "{not json", json.dumps({"a": 2})])
  with pytest.raises(ValueError, match=r"ds/train.jsonl:2: malformed JSON"):
    sources.LocalSource("ds", data_dir=tmp_path).load("train")


def test_empty_split_is_an_error(tmp_path):
  (tmp_path / "ds").mkdir()
  _write(tmp_path / "ds" / "validation.jsonl", [])
  with pytest.raises(ValueError, match="empty"):
    sources.bind(sources.LocalSource("ds"), str(tmp_path)).load("validation")


def test_splits_counts_and_parquet(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  folder = tmp_path / "ds"
  folder.mkdir()
  _write(folder / "train.jsonl", [json.dumps({"x": i}) for i in range(3)])
  pq.write_table(pa.Table.from_pylist([{"x": 7}, {"x": 8}]), folder / "test.parquet")
  source = sources.LocalSource(str(folder))
  assert source.splits == ("train", "test")
  assert (source.count("train"), source.count("test"), source.count("validation")) == (3, 2, 0)
  assert source.load("test") == [{"x": 7}, {"x": 8}] and source.peek("train") == {"x": 0}


def test_make_source_parses_hub_names():
  source = sources.make_source("hf:nyu-mll/glue:sst2")
  assert isinstance(source, sources.HFSource) and (source.name, source.config) == (
    "nyu-mll/glue",
    "sst2",
  )
  assert isinstance(sources.make_source("sst2"), sources.LocalSource)


def test_hub_source_loads_through_datasets_with_renames(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  path = tmp_path / "rows.jsonl"
  _write(
    path, [json.dumps({"sentence1": "a", "label": 1}), json.dumps({"sentence1": "b", "label": 0})]
  )
  source = sources.HFSource(
    "json",
    split_map={"train": "train"},
    rename={"sentence1": "#1 String"},
    data_files={"train": str(path)},
    cache_dir=str(tmp_path / "cache"),
  )
  assert source.splits == ("train",) and not source.is_available()
  assert source.load("train") == [{"#1 String": "a", "label": 1}, {"#1 String": "b", "label": 0}]
  assert source.count("train") == 2


def test_hub_mode_switches_local_or_hub_sources(tmp_path, monkeypatch):
  hub = sources.HFSource(
    "json", split_map={"validation": "train"}, data_files={"train": str(tmp_path / "x.jsonl")}
  )
  source = sources.LocalOrHubSource("sst2", hub)
  assert sources.bind(source, sources.HUB_DATA_DIR).splits == ("validation",)
  local = sources.bind(source, str(tmp_path))
  assert local.splits == sources.SPLITS and not local.is_available()
  monkeypatch.setenv(sources.DATA_DIR_ENV, sources.HUB_DATA_DIR)  # "hf:" through the env too
  assert sources.bind(source, DataContext().resolved_data_dir()) is hub


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
  with pytest.raises(ValueError, match=rf"{path}:2: not UTF-8 \(byte 0xe9 at column 11\)"):
    sources.read_jsonl(str(path))
