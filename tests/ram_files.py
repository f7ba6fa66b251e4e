"""TensorFlow's in-process `ram://` file system, standing in for a bucket: a fresh URL per
test (the file system lives as long as the process), removed after it."""

import contextlib
import uuid
from collections.abc import Iterator

from tfrecords_tools.base import storage


@contextlib.contextmanager
def fresh_dir() -> Iterator[storage.Url]:
    """A directory URL no other test uses, removed afterwards."""
    url = storage.path(f"ram://tests/{uuid.uuid4().hex}")
    url.mkdir()
    try:
        yield url
    finally:
        url.rmtree()
