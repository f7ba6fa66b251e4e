"""The converter's errors: `tfrecords_tools.base.errors.UserError`s, each message naming
the archive, member, file or output at fault."""

from tfrecords_tools.base.errors import UserError


class ArchiveError(UserError, ValueError):
    """An archive is missing, truncated or inconsistent with the others."""


class OutputError(UserError, RuntimeError):
    """The output directory cannot take this run's shards (another run's, a full disk)."""


class WorkerError(UserError, RuntimeError):
    """A worker process died or failed; the message names the member it was on."""


class DatasetError(UserError, ValueError):
    """A file of a shard directory (labels, manifest, stats, a shard) cannot be used."""
