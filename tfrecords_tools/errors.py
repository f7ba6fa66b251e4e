"""The converter's errors: each message names the file, member or argument at fault."""


class ArchiveError(ValueError):
    """An archive is missing, truncated or inconsistent with the others."""


class OutputError(RuntimeError):
    """The output directory cannot take this run's shards (another run's, a full disk)."""


class WorkerError(RuntimeError):
    """A worker process died or failed; the message names the member it was on."""
