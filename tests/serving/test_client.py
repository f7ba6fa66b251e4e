"""`serving.Client` pieces that need no model: request splitting, tensor encodings, retries."""

from __future__ import annotations

import socket
import threading

import grpc
import numpy as np
import pytest

from serving import errors
from serving.client import Client, request_batches
from serving.server import ModelServer
from serving.tensors import to_tensor_proto
from tests.serving.exported_model import MODEL_NAME, assert_same_top5, expected_top5


def test_request_batches_stay_below_the_limit_and_keep_order():
    images = [b"x" * size for size in (400, 300, 500, 100, 2000, 50)]
    batches = list(request_batches(images, max_request_bytes=1000, max_batch=3))
    assert [list(b) for b in batches] == [[0, 1], [2, 3], [4], [5]]  # 4 alone: oversized
    assert list(request_batches(images, 10**9, max_batch=4)) == [range(0, 4), range(4, 6)]
    assert list(request_batches([], 1000, 3)) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_retries_unavailable_until_the_server_is_up(exported):
    port = _free_port()
    image = next(iter(exported.images.values()))
    with Client(f"127.0.0.1:{port}", MODEL_NAME, retries=0, timeout=5) as impatient, \
            pytest.raises(errors.UnavailableError):
        impatient.classify([image])
    server = ModelServer(exported.model_dir, MODEL_NAME, port=port,
                         file_system_poll_wait_seconds=0)
    starter = threading.Timer(0.5, server.start)
    starter.start()
    try:
        with Client(f"127.0.0.1:{port}", MODEL_NAME, retries=12, backoff_seconds=0.1,
                    timeout=30) as patient:
            result = patient.classify([image])
    finally:
        starter.join()
        server.stop()
    assert_same_top5(result, expected_top5(exported.model, [image]))


def test_package_exports_the_client():
    import serving

    assert serving.Client is Client and serving.ModelServer is ModelServer


def test_client_rejects_conflicting_versions_and_non_bytes():
    with pytest.raises(ValueError, match="version or version_label"):
        Client("127.0.0.1:1", version=1, version_label="stable")
    with Client("127.0.0.1:1") as client, pytest.raises(errors.InvalidArgumentError):
        client.classify(["cat.jpg"])


def test_client_decodes_string_tensor_content(exported):
    """tensorflow_model_server --enable_serialization_as_tensor_content packs strings too."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    image = next(iter(exported.images.values()))
    with ModelServer(exported.model_dir, MODEL_NAME, port=0,
                     enable_serialization_as_tensor_content=True) as server:
        channel = grpc.insecure_channel(server.address)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs["image_bytes"].CopyFrom(to_tensor_proto(np.array([image], dtype=object)))
        raw = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        channel.close()
        assert raw.outputs["top_k_labels"].tensor_content  # strings packed
        with Client(server.address, MODEL_NAME) as client:
            top5 = client.classify([image])
    assert_same_top5(top5, expected_top5(exported.model, [image]))


def test_a_bad_image_in_a_batch_is_named(exported):
    good = list(exported.images.values())
    refused = r"^INVALID_ARGUMENT: image 1 of 3: assertion failed: \[not a JPEG or PNG image\]"
    with ModelServer(exported.model_dir, MODEL_NAME, port=0) as server, \
            Client(server.address, MODEL_NAME, retries=0) as client, \
            pytest.raises(errors.InvalidArgumentError, match=refused):
        client.classify([good[0], b"no image here", good[1]])
