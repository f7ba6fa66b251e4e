"""`serving.Client` pieces that need no model: request splitting, tensor encodings, retries."""

from __future__ import annotations

import socket
import threading

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import errors
from serving.client import Client, request_batches
from serving.server import ModelServer
from serving.tensors import to_ndarray, to_tensor_proto
from tests.serving.exported_model import MODEL_NAME, assert_same_top5, expected_top5


def test_request_batches_stay_below_the_limit_and_keep_order():
    images = [b"x" * size for size in (400, 300, 500, 100, 2000, 50)]
    batches = list(request_batches(images, max_request_bytes=1000, max_batch=3))
    assert [list(b) for b in batches] == [[0, 1], [2, 3], [4], [5]]  # 4 alone: oversized
    assert list(request_batches(images, 10**9, max_batch=4)) == [range(0, 4), range(4, 6)]
    assert list(request_batches([], 1000, 3)) == []


@pytest.mark.parametrize("values", [
    np.array([[1.5, -2.0], [3.25, 0.0]], np.float32), np.array([1, -7, 2**40], np.int64),
    np.array([3, 4], np.int32), np.array([0.5, 2.0], np.float16), np.array([True, False]),
    np.array([b"\xff\xd8jpeg", b""], dtype=object), np.zeros((0, 3), np.float32)])
def test_tensors_round_trip_in_both_encodings(values):
    typed = to_tensor_proto(values)
    packed = to_tensor_proto(values, tensor_content=True)
    if values.size:  # strings too, in TensorFlow's varint-length encoding
        assert not typed.tensor_content and packed.tensor_content
    for proto in (typed, packed):
        decoded = to_ndarray(proto)
        assert decoded.shape == values.shape
        np.testing.assert_array_equal(decoded, values)


def test_typed_field_with_one_value_fills_the_shape():
    # TF's rule: fewer typed values than elements repeat the last one.
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[7.0])
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(to_ndarray(proto), [7.0, 7.0, 7.0])


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
