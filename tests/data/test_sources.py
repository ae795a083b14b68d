"""Bad input of flanjax.data.sources: missing data dir, malformed JSONL, empty split."""

import json

import pytest

from flanjax.data import sources


@pytest.fixture(autouse=True)
def _reset_data_dir():
  yield
  sources.set_data_dir(None)


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))


def test_missing_data_dir_names_expected_path_and_env(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "nowhere"))
  source = sources.LocalSource("sst2")
  assert not source.is_available()
  with pytest.raises(FileNotFoundError, match=r"nowhere/sst2.*FLANJAX_DATA_DIR"):
    source.load("train")


def test_unset_data_dir_names_the_env(monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="FLANJAX_DATA_DIR"):
    sources.LocalSource("sst2").load("train")


def test_malformed_line_reports_file_and_line(tmp_path):
  (tmp_path / "ds").mkdir()
  _write(tmp_path / "ds" / "train.jsonl", [json.dumps({"a": 1}), "{not json", json.dumps({"a": 2})])
  sources.set_data_dir(tmp_path)
  with pytest.raises(ValueError, match=r"ds/train.jsonl:2: malformed JSON"):
    sources.LocalSource("ds").load("train")


def test_empty_split_is_an_error(tmp_path):
  (tmp_path / "ds").mkdir()
  _write(tmp_path / "ds" / "validation.jsonl", [])
  sources.set_data_dir(tmp_path)
  with pytest.raises(ValueError, match="empty"):
    sources.LocalSource("ds").load("validation")


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
  monkeypatch.setenv(sources.DATA_DIR_ENV, sources.HUB_DATA_DIR)
  assert source.splits == ("validation",)
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
  assert source.splits == sources.SPLITS and not source.is_available()
