"""Writing a file so that it is either whole or absent: the converter's shards, receipts
and manifest, and keras_alexnet's checkpoints.

The content goes to a temporary file beside the final one, is fsynced, and is renamed
over it (atomic on POSIX); a failure or an interrupt part-way removes the temporary, so
a kill at any point leaves the previous file, or none, never a partial one.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path


def temporary_name(path: Path) -> Path:
    # Machines sharing the output may write the same file at once: one temporary each.
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, temporary: str | os.PathLike | None = None
                ) -> Iterator[Path]:
    """Yields the temporary path to write (`temporary`, default `temporary_name(path)`);
    when the block ends without an error it becomes `path`."""
    path = Path(path)
    temporary = Path(temporary) if temporary is not None else temporary_name(path)
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` whole or not at all."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
