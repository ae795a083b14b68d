"""Packing, determinism, resume and sharding of flanjax.data.pipeline (on the toy mixture), the
token cache (flanjax.data.tokenize) and eval rows (flanjax.data.eval_data)."""

import collections
import json

import numpy as np
import pytest

import mixtures  # noqa: F401  (registers the toy tasks)
from flanjax.data import DEFAULT, eval_data, packing, pipeline, tokenize

LENGTHS = {"inputs": 96, "targets": 16}


def _iterator(**overrides):
  kwargs = dict(lengths=LENGTHS, batch_size=4, seed=3, window=48)
  kwargs.update(overrides)
  return pipeline.make_batch_iterator(DEFAULT, kwargs.pop("mixture", "toy"), "train", **kwargs)


def _segments(batch):
  """(inputs, targets) token tuples of every example in a batch (packed or not)."""
  examples = []
  for row in range(batch["encoder_input_tokens"].shape[0]):
    if "encoder_segment_ids" in batch:
      enc_seg, dec_seg = batch["encoder_segment_ids"][row], batch["decoder_segment_ids"][row]
      for segment in range(1, int(enc_seg.max()) + 1):
        examples.append(
          (
            tuple(batch["encoder_input_tokens"][row][enc_seg == segment]),
            tuple(batch["decoder_target_tokens"][row][dec_seg == segment]),
          )
        )
    else:
      inputs, targets = batch["encoder_input_tokens"][row], batch["decoder_target_tokens"][row]
      if inputs.any():
        examples.append((tuple(inputs[inputs != 0]), tuple(targets[targets != 0])))
  return examples


def _one_window(iterator):
  """Every batch (one row each) of the iterator's first window."""
  batches = [next(iterator)]
  while iterator.rows_left_in_window:
    batches.append(next(iterator))
  return batches


def test_packed_batches_carry_the_same_tokens_as_unpacked():
  packed = _one_window(_iterator(batch_size=1))
  unpacked = next(_iterator(batch_size=48, pack=False))
  packed_examples = [e for b in packed for e in _segments(b)]
  assert collections.Counter(packed_examples) == collections.Counter(_segments(unpacked))
  assert len(packed) < 48 / 2  # several examples share a row


def test_packed_features_are_consistent_per_segment():
  batch = next(_iterator(batch_size=8))
  assert set(batch) == {
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
    "encoder_segment_ids",
    "decoder_segment_ids",
    "encoder_positions",
    "decoder_positions",
  }
  for row in range(8):
    for prefix, tokens in (
      ("encoder", "encoder_input_tokens"),
      ("decoder", "decoder_target_tokens"),
    ):
      segments, positions = batch[f"{prefix}_segment_ids"][row], batch[f"{prefix}_positions"][row]
      assert np.array_equal(segments != 0, batch[tokens][row] != 0)
      for segment in range(1, segments.max() + 1):
        where = np.flatnonzero(segments == segment)
        assert np.array_equal(where, np.arange(where[0], where[0] + len(where)))  # contiguous
        assert np.array_equal(positions[where], np.arange(len(where)))
        assert batch[tokens][row][where][-1] == 1  # each example ends with EOS
        if prefix == "decoder":
          target = batch["decoder_target_tokens"][row][where]
          assert np.array_equal(
            batch["decoder_input_tokens"][row][where], np.concatenate([[0], target[:-1]])
          )
    assert np.array_equal(
      batch["decoder_loss_weights"][row],
      (batch["decoder_target_tokens"][row] != 0).astype(np.float32),
    )


def test_unpacked_batches_have_seqio_keys_only():
  batch = next(_iterator(pack=False))
  assert set(batch) == {
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
  }
  targets = batch["decoder_target_tokens"]  # Shifted right; pad stays 0 (EOS is not fed back).
  expected = np.where(targets[:, 1:] != 0, targets[:, :-1], 0)
  assert np.array_equal(batch["decoder_input_tokens"][:, 1:], expected)
  assert np.all(batch["decoder_input_tokens"][:, 0] == 0)


def _next_fit_rows(lengths_in, lengths_tgt, capacity):
  rows, room = 0, (0, 0)
  for a, b in zip(lengths_in, lengths_tgt, strict=True):
    if a > room[0] or b > room[1]:
      rows, room = rows + 1, capacity
    room = (room[0] - a, room[1] - b)
  return rows


def test_best_fit_is_never_sparser_than_next_fit():
  rng = np.random.default_rng(0)
  lengths_in, lengths_tgt = rng.integers(1, 97, 300), rng.integers(1, 17, 300)
  rows, in_offsets, tgt_offsets = packing.pack_best_fit(lengths_in, lengths_tgt, (96, 16))
  assert rows.max() + 1 <= _next_fit_rows(lengths_in, lengths_tgt, (96, 16))
  for row in np.unique(rows):  # no overlap and within capacity
    mine = rows == row
    for offsets, lengths, cap in ((in_offsets, lengths_in, 96), (tgt_offsets, lengths_tgt, 16)):
      order = np.argsort(offsets[mine])
      ends = offsets[mine][order] + lengths[mine][order]
      assert ends[-1] <= cap and np.all(offsets[mine][order][1:] >= ends[:-1])


def test_fill_is_reported_and_packing_improves_it():
  packed, unpacked = _iterator(batch_size=8), _iterator(batch_size=8, pack=False)
  for _ in range(10):
    next(packed), next(unpacked)
  assert packed.fill()["inputs_fill"] > 1.5 * unpacked.fill()["inputs_fill"]
  assert 0 < packed.fill()["targets_fill"] <= 1


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_stream_is_deterministic_for_a_seed():
  _assert_same([next(_iterator()) for _ in range(3)][:1], [next(_iterator())])
  first, other_seed = next(_iterator()), next(_iterator(seed=4))
  assert not np.array_equal(first["encoder_input_tokens"], other_seed["encoder_input_tokens"])


@pytest.mark.parametrize("pack", [True, False])
def test_resume_at_several_positions_replays_the_same_batches(pack):
  reference = _iterator(pack=pack)
  batches = [next(reference) for _ in range(30)]  # crosses several 48-example windows
  for position in (0, 1, 7, 13, 29):
    source = _iterator(pack=pack)
    for _ in range(position):
      next(source)
    state = json.loads(json.dumps(source.get_state()))
    resumed = _iterator(pack=pack)
    resumed.set_state(state)
    _assert_same([next(resumed) for _ in range(30 - position)], batches[position:])


def test_state_from_a_different_pipeline_is_rejected():
  state = _iterator().get_state()
  with pytest.raises(ValueError, match="seed"):
    _iterator(seed=99).set_state(state)


@pytest.mark.parametrize("pack", [True, False])
def test_hosts_together_yield_the_one_host_global_batch(pack):
  # Window 48 with a global batch of 8 crosses several windows in 12 steps.
  whole = _iterator(batch_size=8, pack=pack)
  expected = [next(whole) for _ in range(12)]
  for hosts in (1, 2, 4):
    iterators = [
      _iterator(batch_size=8 // hosts, pack=pack, shard_index=i, num_shards=hosts)
      for i in range(hosts)
    ]
    for step, batch in enumerate(expected):
      parts = [next(it) for it in iterators]
      for key in batch:
        joined = np.concatenate([part[key] for part in parts])  # host order = row order
        np.testing.assert_array_equal(joined, batch[key], err_msg=f"{hosts} hosts, {key}, {step}")
    assert all(it.get_state() == whole.get_state() for it in iterators)  # one global state


def test_a_state_written_by_two_hosts_resumes_on_one_and_on_four():
  whole = _iterator(batch_size=8)
  expected = [next(whole) for _ in range(10)]
  pair = [_iterator(batch_size=4, shard_index=i, num_shards=2) for i in range(2)]
  for _ in range(4):
    [next(it) for it in pair]
  state = json.loads(json.dumps(pair[1].get_state()))
  assert state["version"] == 2 and "shard" not in state["config"]
  one = _iterator(batch_size=8)
  one.set_state(state)
  _assert_same([next(one) for _ in range(6)], expected[4:])
  four = [_iterator(batch_size=2, shard_index=i, num_shards=4) for i in range(4)]
  for it in four:
    it.set_state(state)
  for batch in expected[4:]:
    parts = [next(it) for it in four]
    np.testing.assert_array_equal(
      np.concatenate([p["encoder_input_tokens"] for p in parts]), batch["encoder_input_tokens"]
    )


def test_version_1_states_of_one_host_carry_over_and_of_several_are_refused():
  source = _iterator()
  for _ in range(5):
    next(source)
  state = source.get_state()
  old = dict(state, version=1, config=dict(state["config"], shard=[0, 1]))  # as 43bd940 wrote
  resumed = _iterator()
  resumed.set_state(old)
  _assert_same([next(resumed)], [next(source)])
  split = dict(old, config=dict(old["config"], shard=[1, 2]))
  with pytest.raises(ValueError, match="host 1 of 2.*no longer"):
    _iterator().set_state(split)


def test_a_different_global_batch_size_is_refused():
  state = _iterator(batch_size=4, shard_index=0, num_shards=2).get_state()
  with pytest.raises(ValueError, match=r"'batch_size': \(8, 4\)"):
    _iterator(batch_size=4).set_state(state)


def test_epochs_are_reshuffled_and_cover_every_example():
  iterator = pipeline.make_batch_iterator(
    DEFAULT, "toy_add", "train", lengths=LENGTHS, batch_size=500, seed=0, pack=False, window=500
  )
  epoch_1 = [
    row.tobytes() for b in (next(iterator) for _ in range(4)) for row in b["encoder_input_tokens"]
  ]
  epoch_2 = [
    row.tobytes() for b in (next(iterator) for _ in range(4)) for row in b["encoder_input_tokens"]
  ]
  assert collections.Counter(epoch_1) == collections.Counter(epoch_2)  # 2,000 examples each
  assert epoch_1 != epoch_2


def test_truncation_keeps_eos():
  batch = next(
    pipeline.make_batch_iterator(
      DEFAULT,
      "toy_sentiment",
      "train",
      batch_size=4,
      seed=0,
      lengths={"inputs": 8, "targets": 2},
      pack=False,
    )
  )
  assert np.all(batch["encoder_input_tokens"][:, -1] == 1)
  assert np.all(batch["decoder_target_tokens"][:, -1] == 1)


def test_eval_rows_are_in_order_with_metadata_and_untruncated():
  rows = eval_data.eval_rows(DEFAULT, "toy_sentiment", "validation")
  assert len(rows) == 300  # 100 examples x 3 templates
  assert [r.template_id for r in rows[:4]] == [0, 1, 2, 0]
  assert [r.example_index for r in rows[:4]] == [0, 0, 0, 1]
  assert rows[0].options == ("positive", "negative")
  assert all(r.target in r.options for r in rows)
  vocabulary = DEFAULT.get("toy_sentiment").output_features["inputs"].vocabulary
  for row in rows[:8]:
    expected = list(vocabulary.encode(row.input_text)) + [tokenize.EOS_ID]
    assert list(row.input_ids) == expected
  assert max(len(r.input_ids) for r in rows) > 8  # never truncated here
  generation = eval_data.eval_rows(DEFAULT, "toy_add", "test")
  assert generation[0].options == () and generation[0].target.isdigit()


def test_eval_rows_keep_the_first_rows_of_each_template():
  rows = eval_data.eval_rows(DEFAULT, "toy_sentiment", "validation", max_per_template=2)
  assert [(r.example_index, r.template_id) for r in rows] == [
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 1),
    (1, 2),
  ]
  assert rows == eval_data.eval_rows(DEFAULT, "toy_sentiment", "validation")[:6]


def test_unknown_mixture_and_bad_lengths():
  with pytest.raises(ValueError, match="unknown mixture or task 'nope'.*toy"):
    pipeline.make_batch_iterator(DEFAULT, "nope", "train", lengths=LENGTHS, batch_size=2)
  with pytest.raises(ValueError, match="lengths"):
    pipeline.make_batch_iterator(DEFAULT, "toy", "train", lengths={"inputs": 8}, batch_size=2)


def _assert_tokenized_equal(a, b):
  for field in ("inputs_values", "inputs_splits", "targets_values", "targets_splits"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_fast_tokenization_matches_the_seqio_task_pipeline():
  fast = tokenize.tokenize_rendered(DEFAULT, "toy_paraphrase_shuffle", "validation")
  _assert_tokenized_equal(
    fast, tokenize.tokenize_with_seqio(DEFAULT, "toy_paraphrase_shuffle", "validation")
  )


def test_fast_sentencepiece_tokenization_matches_seqio(tmp_path):
  import dataclasses
  import uuid

  from flanjax.data import inspect, registry, toy, vocab

  model = inspect.train_vocab(DEFAULT, "toy_eval_paraphrase", 150, str(tmp_path / "sp.model"))
  name = f"test_sp_{uuid.uuid4().hex[:8]}"
  (spec,) = [s for s in toy.TOY_TASKS if s.name == "toy_nli_member"]
  registry.register_flan_tasks(
    [dataclasses.replace(spec, name=name, vocabulary=vocab.get_vocabulary(model), family="flan")]
  )
  fast = tokenize.tokenize_rendered(DEFAULT, name, "test")
  assert fast is not None and fast.inputs_values.max() < 150
  _assert_tokenized_equal(fast, tokenize.tokenize_with_seqio(DEFAULT, name, "test"))


def test_truncation_is_counted_per_task():
  from flanjax.data import DataContext, pipeline

  it = pipeline.make_batch_iterator(
    DataContext(toy_vocab="bytes"),
    "toy_sentiment",
    "train",
    lengths={"inputs": 16, "targets": 4},
    batch_size=4,
  )
  counts = it.truncation()["toy_sentiment"]
  assert counts["examples"] == 2000
  assert 0 < counts["inputs"] <= 2000 and 0 <= counts["targets"] <= 2000
  roomy = pipeline.make_batch_iterator(
    DataContext(toy_vocab="bytes"),
    "toy_sentiment",
    "train",
    lengths={"inputs": 4096, "targets": 512},
    batch_size=4,
  )
  assert roomy.truncation() == {}
