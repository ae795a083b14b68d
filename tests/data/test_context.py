"""flanjax.data.context: explicit data contexts in one process; imports read no file."""

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import seqio

import mixtures  # noqa: F401  (registers the shipped tasks)
from flanjax.data import DEFAULT, DataContext, eval_data, pipeline, registry, vocab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LENGTHS = {"inputs": 64, "targets": 16}


def _write_dataset(data_dir, word):
  folder = data_dir / "tiny"
  folder.mkdir(parents=True)
  rows = [{"text": f"the {word} number {i}", "label": i % 2} for i in range(8)]
  for split in ("train", "validation"):
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A FLAN task over `<data_dir>/tiny`, two data dirs, and a small SentencePiece model."""
  root = tmp_path_factory.mktemp("contexts")
  _write_dataset(root / "cats", "cat")
  _write_dataset(root / "dogs", "dog")
  texts = [f"the {w} number {i} is it good? yes no" for i in range(200) for w in ("cat", "dog")]
  model = vocab.train_sentencepiece(texts, 40, str(root / "sp.model"))
  name = f"test_ctx_{uuid.uuid4().hex[:8]}"
  registry.register_flan_task(
    name,
    source="tiny",
    category="sentiment",
    metrics=["accuracy"],
    templates=[("{text}\nIs it good?", "{answer}")],
    preprocess=lambda ex: {**ex, "answer": ["no", "yes"][ex["label"]]},
    options=["no", "yes"],
  )
  return name, str(root / "cats"), str(root / "dogs"), model


def _observe(context, name):
  """What each entry point yields for `name` in `context`."""
  example = next(
    context.get(name).get_dataset(None, "validation", shuffle=False).as_numpy_iterator()
  )
  rows = eval_data.eval_rows(context, name, "validation")
  batch = next(
    pipeline.make_batch_iterator(
      context, name, "train", lengths=LENGTHS, batch_size=2, pack=False, shuffle=False
    )
  )
  return {
    "vocab_size": context.get(name).output_features["targets"].vocabulary.vocab_size,
    "seqio_inputs": example["inputs"].tolist(),
    "seqio_text": example["inputs_pretokenized"].decode(),
    "eval_ids": rows[0].input_ids,
    "eval_text": rows[0].input_text,
    "batch": batch["encoder_input_tokens"][0].tolist(),
  }


def test_two_contexts_coexist_with_their_own_data_dir_and_vocabulary(tiny):
  name, cats, dogs, model = tiny
  as_bytes, as_pieces = DataContext(data_dir=cats), DataContext(data_dir=dogs, vocab=model)
  first_bytes = _observe(as_bytes, name)
  first_pieces = _observe(as_pieces, name)
  assert first_bytes["vocab_size"] == 259 and first_pieces["vocab_size"] < 259
  assert as_pieces.vocabulary_of(name).vocab_size == first_pieces["vocab_size"]
  assert first_bytes["seqio_text"].startswith("the cat number 0")
  assert first_pieces["seqio_text"].startswith("the dog number 0")
  assert first_bytes["seqio_inputs"] == list(first_bytes["eval_ids"])
  assert first_pieces["seqio_inputs"] == list(first_pieces["eval_ids"])
  assert first_bytes["seqio_inputs"][:3] == [ord(c) + 3 for c in "the"]
  assert max(first_pieces["batch"]) < first_pieces["vocab_size"] - vocab.NUM_SENTINELS
  assert first_pieces["batch"] != first_bytes["batch"]
  assert len(first_pieces["eval_ids"]) < len(first_bytes["eval_ids"])  # pieces, not bytes
  pieces = as_pieces.vocabulary_of(name)
  assert pieces.decode(list(first_pieces["eval_ids"])).startswith("the dog number 0")
  # Each is still right after the other was used (no shared global state).
  assert _observe(as_bytes, name) == first_bytes
  assert _observe(as_pieces, name) == first_pieces
  assert as_pieces.get(name).name == f"{name}#{as_pieces.key}" and as_pieces.get(name) is (
    as_pieces.get(name)
  )


def test_default_context_keeps_the_plain_seqio_names():
  assert DataContext() == DEFAULT and DataContext.default() is DEFAULT and DEFAULT.key == ""
  assert DEFAULT.get("toy_add") is seqio.get_mixture_or_task("toy_add")
  assert DEFAULT.get("toy").name == "toy"
  twin = DataContext(toy_vocab="bytes").get("toy")
  assert twin.name.startswith("toy#") and DataContext(toy_vocab="bytes").task_names("toy") == (
    DEFAULT.task_names("toy")
  )


def test_a_user_mixture_over_flan_tasks_gets_a_twin_with_its_rates():
  name = f"test_mix_{uuid.uuid4().hex[:8]}"
  seqio.MixtureRegistry.add(name, [("toy_add", 3.0), ("toy_copy", 1.0)])
  context = DataContext(toy_vocab="bytes")
  twin = context.get(name)
  assert twin.name == f"{name}#{context.key}"
  assert {t.name.split("#")[0]: twin.get_rate(t) for t in twin.tasks} == {
    "toy_add": 3.0,
    "toy_copy": 1.0,
  }
  assert context.task_names(name) == ["toy_add", "toy_copy"]
  assert context.vocabulary_of(name).vocab_size == 259
  batch = next(pipeline.make_batch_iterator(context, name, "train", lengths=LENGTHS, batch_size=4))
  assert np.max(batch["encoder_input_tokens"]) >= 100  # byte ids, not the toy word pieces


def test_a_plain_seqio_task_has_no_context(tmp_path):
  name = f"test_plain_{uuid.uuid4().hex[:8]}"
  seqio.TaskRegistry.add(
    name,
    source=seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=["train"]),
    output_features={},
  )
  assert DEFAULT.get(name).name == name
  with pytest.raises(ValueError, match=f"{name}.*register_flan_task"):
    DataContext(data_dir=str(tmp_path)).get(name)


def test_lazy_rates_count_the_context_data(tmp_path):
  (tmp_path / "cb").mkdir()
  (tmp_path / "cb" / "train.jsonl").write_text("{}\n" * 5)
  for split in ("validation", "test"):  # with both, no train row goes to the selection split
    (tmp_path / "cb" / f"{split}.jsonl").write_text("{}\n")
  mixture = DataContext(data_dir=str(tmp_path)).get("flan_mini")
  (cb,) = [t for t in mixture.tasks if t.name.startswith("cb#")]
  assert mixture.get_rate(cb) == 5.0


_IMPORT_CHECK = """
import os, sys
watched = [os.path.realpath(p) for p in sys.argv[1:]]
opened = []
def hook(event, args):
  if event == "open" and isinstance(args[0], str):
    if any(os.path.realpath(args[0]).startswith(w) for w in watched):
      opened.append(args[0])
sys.addaudithook(hook)
import mixtures
from flanjax.data import DEFAULT, DataContext
DEFAULT.get("flan_mini"), DataContext(data_dir=sys.argv[1]).get("flan_mini")
assert DEFAULT.task_names("toy")[0] == "toy_add"
print("opened:", opened)
"""


def test_import_mixtures_reads_no_file(tmp_path):
  """Registration reads no data (a broken file goes unnoticed) and trains no toy vocabulary."""
  data_dir, cache = tmp_path / "data", tmp_path / "cache"
  (data_dir / "sst2").mkdir(parents=True)
  (data_dir / "sst2" / "train.jsonl").write_text("{not json\n")
  cache.mkdir()
  env = {**os.environ, "FLANJAX_DATA_DIR": str(data_dir), "XDG_CACHE_HOME": str(cache)}
  result = subprocess.run(
    [sys.executable, "-c", _IMPORT_CHECK, str(data_dir), str(cache / "flanjax")],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "opened: []" in result.stdout
  assert not (
    cache / "flanjax"
  ).exists()  # the toy vocabulary is trained on first use, not at import
