"""TensorFlow's in-process `ram://` file system, standing in for a bucket: a fresh URL per
test (the file system lives as long as the process), removed after it."""

import uuid

import pytest

from tfrecords_tools import storage


@pytest.fixture
def ram_dir() -> storage.Url:
    """A directory URL no other test uses."""
    url = storage.path(f"ram://tests/{uuid.uuid4().hex}")
    url.mkdir()
    yield url
    url.rmtree()
