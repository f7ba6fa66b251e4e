"""The local server on a `tf.io.gfile` URL base path (`gs://...` in production; TensorFlow's
in-process `ram://` here): it serves a version uploaded there, picks up a new one, and
loads a version only once its saved_model.pb has arrived."""

from __future__ import annotations

import re
import time

import pytest
from tensorflow_serving.apis import model_pb2

from serving.client import Client
from serving.server import ModelServer
from serving.server_core import single_model_config
from tests.ram_files import fresh_dir
from tests.serving.exported_model import MODEL_NAME, assert_same_top5, expected_top5
from tfrecords_tools.base import storage
from tfrecords_tools.base.errors import ArgumentError

POLL = 0.1


@pytest.fixture
def ram_dir():
    with fresh_dir() as url:
        yield url


def wait_for_versions(server, versions: list[int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    spec = model_pb2.ModelSpec(name=MODEL_NAME)
    while sorted(s.version for s in server.core.status(spec) if s.state == s.AVAILABLE) \
            != versions:
        assert time.monotonic() < deadline, f"versions {versions} not AVAILABLE"
        time.sleep(POLL)


def test_the_server_serves_and_follows_versions_at_a_url(exported, ram_dir):
    base = ram_dir / MODEL_NAME
    storage.upload_tree(exported.model_dir / "1", base / "1")
    image = exported.images["image0.jpg"]
    with ModelServer(str(base), MODEL_NAME, port=0,
                     file_system_poll_wait_seconds=POLL) as server, \
            Client(server.address, MODEL_NAME, retries=0) as client:
        assert_same_top5(client.classify([image]), expected_top5(exported.model, [image]))

        # A version whose saved_model.pb is still to come (an upload under way) is
        # not loaded; once it arrives, the version is served.
        version = exported.model_dir / "1"
        storage.upload_tree(version, base / "2", last=("saved_model.pb",))
        (base / "2" / "saved_model.pb").unlink()
        time.sleep(5 * POLL)
        assert [status.version for status in client.status()] == [1]
        storage.upload(version / "saved_model.pb", base / "2" / "saved_model.pb")
        wait_for_versions(server, [2])
        assert_same_top5(client.classify([image]), expected_top5(exported.model, [image]))


def test_a_url_base_path_is_kept_as_given_and_a_local_one_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = single_model_config(MODEL_NAME, "gs://bucket/models/alexnet")
    assert config.model_config_list.config[0].base_path == "gs://bucket/models/alexnet"
    config = single_model_config(MODEL_NAME, "models/alexnet")
    assert config.model_config_list.config[0].base_path == str(tmp_path / "models/alexnet")


def test_a_base_path_tensorflow_cannot_open_is_one_line():
    server = ModelServer("s3://bucket/models/alexnet", MODEL_NAME, port=0)
    with pytest.raises(ArgumentError, match="^" + re.escape(
            "s3://bucket/models/alexnet: TensorFlow has no file system for s3:// URLs here; "
            "install tensorflow-io")):
        server.start()
