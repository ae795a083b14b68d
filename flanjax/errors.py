"""Errors the command line prints as one line (exit code 2), shared by cli.py and commands.py."""


class UsageError(ValueError):
  """Bad command line, config or input file; the message names the thing to fix."""
