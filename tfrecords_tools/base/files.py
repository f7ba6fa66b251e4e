"""Writing a file so that it is either whole or absent: the converter's shards, receipts
and manifest, and keras_alexnet's checkpoints, run file and exports' files.

The content goes to a temporary file beside the final one, is fsynced, and is renamed
over it (atomic on POSIX); a failure or an interrupt part-way removes the temporary, so
a kill at any point leaves the previous file, or none, never a partial one.

A URL (`storage.Url`) is written the same way through `tf.io.gfile`: the block writes a
local file, which is copied to a temporary name beside the URL and renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tfrecords_tools.base import storage


def temporary_name(path: Path | storage.Url) -> Path | storage.Url:
    # Machines sharing the output may write the same file at once: one temporary each.
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike | storage.Url,
                temporary: str | os.PathLike | storage.Url | None = None) -> Iterator[Path]:
    """Yields the local temporary path to write (`temporary`, default
    `temporary_name(path)`); when the block ends without an error it becomes `path`.
    For a URL the local file is `temporary`'s name in a private directory."""
    if storage.is_url(path):
        with _atomic_url(storage.path(path), temporary) as local:
            yield local
        return
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


@contextlib.contextmanager
def _atomic_url(url: storage.Url, temporary: str | os.PathLike | storage.Url | None
                ) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="upload-") as scratch:
        local = Path(scratch) / (storage.path(temporary).name if temporary is not None
                                  else url.name)
        yield local
        # An object store (gs://, s3://) shows an object only once its upload is whole,
        # and its rename is a server-side copy of the whole object: each file is
        # atomic.  A file system that shows a file as it grows (hdfs://) needs the
        # rename for that.
        remote = temporary_name(url)
        try:
            storage.upload(local, remote)
            remote.replace(url)
        except BaseException:
            remote.unlink(missing_ok=True)
            raise


def write_atomically(path: str | os.PathLike | storage.Url, text: str) -> None:
    """Writes `text` (UTF-8) to `path` (a local path or a URL) whole or not at all."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
