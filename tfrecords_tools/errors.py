"""The converter's errors, and the base of every error a user can act on.

`UserError` is the one base the three packages share (this package is the lowest, so
`serving` and `keras_alexnet` can subclass it): the command line prints such an error
as one line, and anything else as a bug with its traceback (`tfrecords_tools.cli`).
Each message names the file, member or argument at fault.
"""


class UserError(Exception):
    """Something the user can put right (a path, an argument, a file's contents)."""


class ArgumentError(UserError, ValueError):
    """An argument the converter cannot use; the message names it and the valid range."""


class ArchiveError(UserError, ValueError):
    """An archive is missing, truncated or inconsistent with the others."""


class OutputError(UserError, RuntimeError):
    """The output directory cannot take this run's shards (another run's, a full disk)."""


class WorkerError(UserError, RuntimeError):
    """A worker process died or failed; the message names the member it was on."""


class DatasetError(UserError, ValueError):
    """A file of a shard directory (labels, manifest, stats, a shard) cannot be used."""
