"""The synthetic resumable stream."""

import numpy as np

from flanjax.train.synthetic import SyntheticTask


def test_reverse_rows_follow_the_converter_format():
  task = SyntheticTask(batch_size=4, input_length=8, target_length=8, vocab_size=16, seed=3)
  batch = next(task)
  for row in range(4):
    inputs = batch["encoder_input_tokens"][row]
    length = int(np.argmax(inputs == 1))
    assert length >= 1 and np.all(inputs[:length] >= 2) and np.all(inputs[length + 1 :] == 0)
    targets = batch["decoder_target_tokens"][row]
    np.testing.assert_array_equal(targets[:length], inputs[:length][::-1])
    assert targets[length] == 1
    np.testing.assert_array_equal(batch["decoder_input_tokens"][row][1:], targets[:-1])
    assert batch["decoder_input_tokens"][row][0] == 0
    np.testing.assert_array_equal(batch["decoder_loss_weights"][row], targets != 0)


def test_processes_take_contiguous_rows_of_the_same_global_batch():
  kwargs = dict(batch_size=6, input_length=8, target_length=8, vocab_size=16, seed=1)
  single = SyntheticTask(**kwargs)
  parts = [SyntheticTask(**kwargs, process_index=i, process_count=3) for i in range(3)]
  for _ in range(2):
    whole = next(single)
    pieces = [next(part) for part in parts]
    for key, value in whole.items():
      np.testing.assert_array_equal(np.concatenate([p[key] for p in pieces]), value)


def test_state_round_trip_resumes_the_stream():
  kwargs = dict(batch_size=2, input_length=8, target_length=8, vocab_size=16, task="copy")
  first = SyntheticTask(**kwargs)
  next(first), next(first)
  state = first.get_state()
  expected = next(first)
  second = SyntheticTask(**kwargs)
  second.set_state(state)
  got = next(second)
  assert state == {"position": 2, "seed": 0}
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key])


def test_full_batches_have_no_padding():
  batch = next(
    SyntheticTask(batch_size=2, input_length=16, target_length=8, vocab_size=32, full=True)
  )
  assert np.all(batch["encoder_input_tokens"] != 0)
  assert np.all(batch["decoder_loss_weights"] == 1.0)
