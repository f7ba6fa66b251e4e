"""The errors keras_alexnet raises for what a user can put right.

Each is a `tfrecords_tools.base.errors.UserError`, so the command line prints it as one
line (`tfrecords_tools.base.cli`); everything else is a bug and keeps its traceback.  Each
also subclasses the builtin it replaces, so `except ValueError` still catches it.
"""

from tfrecords_tools.base.errors import UserError


class AlexNetError(UserError, ValueError):
    """A value, file or directory the user gave cannot be used; the message says why."""


class CheckpointError(AlexNetError):
    """A checkpoint cannot be read or does not fit what it is used for."""


class DivergedError(UserError, FloatingPointError):
    """Training's loss became NaN or infinite (a learning rate too high, bad data)."""


class MissingPackageError(UserError, ImportError):
    """An optional package a feature needs is not installed; the message says which."""
