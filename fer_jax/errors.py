"""Every exception a user can cause and fix, under one base class. Imports nothing heavy.

Entry points (fer_jax.main, fer_jax.predict) catch `FerError` and print its message (which names the
file or field and the fix) with no traceback, exit status 2. Each class also derives from the builtin
exception its callers caught before (ValueError, FloatingPointError, ...), so `except ValueError` still
works.
"""


class FerError(Exception):
  """Base of every user-fixable error; the message names the file or field and the fix."""


class ConfigError(FerError, ValueError):
  """A config field has a wrong value, range or combination (checked before any work)."""


class ManualDataError(FerError, ValueError):
  """manual_dir is missing, empty or does not hold the layout the builder expects."""


class EmptySequenceError(FerError, ValueError):
  """A sequence has no frames."""


class NoFaceError(FerError, ValueError):
  """No face was found (in an image, or in any frame of a sequence)."""


class UnreadableImageError(FerError, ValueError):
  """An image file is missing, corrupt or not an image."""


class UnreadableVideoError(FerError, ValueError):
  """A video file or stream cannot be opened or decoded."""


class MissingInputError(FerError, FileNotFoundError):
  """An input the user named (a video, frame folder or image) does not exist."""


class NonFiniteLossError(FerError, FloatingPointError):
  """The training loss became NaN or infinite."""


class MissingOutputError(FerError, FileNotFoundError):
  """A workdir lacks what a later step needs (a checkpoint, a fitted CRF)."""


class OutputExistsError(FerError, FileExistsError):
  """An output file exists and would be overwritten."""
