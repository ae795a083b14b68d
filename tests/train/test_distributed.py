"""Environment parsing for multi-host start-up (the real multi-process run is in test_loop)."""

import pytest

from flanjax.train import distributed


def test_single_process_environment_is_a_no_op():
  assert distributed.initialize_from_env({}) == (0, 1)
  assert distributed.initialize_from_env(
    {"FLANJAX_COORDINATOR": "h:1", "FLANJAX_PROCESS_ID": "0", "FLANJAX_NUM_PROCESSES": "1"}
  ) == (0, 1)


@pytest.mark.parametrize(
  "env, message",
  [
    ({"FLANJAX_COORDINATOR": "h:1", "FLANJAX_NUM_PROCESSES": "2"}, "FLANJAX_PROCESS_ID"),
    (
      {"FLANJAX_COORDINATOR": "h:1", "FLANJAX_NUM_PROCESSES": "2", "FLANJAX_PROCESS_ID": "2"},
      r"FLANJAX_PROCESS_ID=2 is outside \[0, 2\)",
    ),
    (
      {"FLANJAX_COORDINATOR": "h:1", "FLANJAX_NUM_PROCESSES": "two", "FLANJAX_PROCESS_ID": "0"},
      "must be integers",
    ),
  ],
)
def test_incomplete_environment_names_the_variable(env, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize_from_env(env)


def test_gather_json_in_one_process():
  assert distributed.gather_json({"position": 3}) == [{"position": 3}]
  assert distributed.any_process(True) and not distributed.any_process(False)
