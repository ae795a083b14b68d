"""Imports TensorFlow without its C++ start-up chatter (unless FLANJAX_DEBUG is set).

TensorFlow 2.21 writes "oneDNN custom operations are on" / "Could not find cuda drivers" lines
to file descriptor 2 *before* its logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide
them; the only way is to point fd 2 at /dev/null for the import. Python-level errors are not
lost: an exception raised by the import propagates after stderr is restored.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_to_devnull():
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def import_tensorflow_quietly() -> None:
  if "tensorflow" in sys.modules or os.environ.get("FLANJAX_DEBUG"):
    return
  with _stderr_to_devnull():
    import tensorflow  # noqa: F401


import_tensorflow_quietly()
