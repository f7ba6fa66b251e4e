"""The server under requests an attacker or a buggy client sends, over raw loopback
sockets: every one answered (JSON, 4xx), nothing logged, memory bounded before it is
spent, and the server serving the next good request."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import time

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.server import ServerProcess
from tests.serving.exported_model import MODEL_NAME
from tests.serving.test_rest import free_port
from tests.serving.test_server import rss_bytes

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
CLASSIFY = f"/v1/models/{MODEL_NAME}:classify"


@pytest.fixture(scope="module")
def server(exported):
    port = free_port()
    with ServerProcess(exported.model_dir, MODEL_NAME, f"--rest_api_port={port}") as process:
        process.rest_port = port
        yield process


def exchange(port: int, data: bytes, method: str = "POST") -> tuple[int, bytes]:
    """Sends raw bytes, returns the answer's status and body (raises if none comes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, response.read()


def post(path: str, body: bytes | str, headers: bytes = b"") -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
            + headers + b"\r\n" + body)


def bare(request_line: str, headers: bytes = b"") -> bytes:
    return request_line.encode() + b"\r\n" + headers + b"\r\n"


def chunked(path: str, body: bytes, size: int) -> bytes:
    chunks = b"".join(f"{len(body[i:i + size]):x}\r\n".encode() + body[i:i + size] + b"\r\n"
                      for i in range(0, len(body), size))
    return (f"POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunks
            + b"0\r\n\r\n")


def element(number: int, message: str) -> str:
    return f"Failed to process element: {number} of 'instances' list. Error: " \
           f"INVALID_ARGUMENT: {message}"


HOSTILE = {
    # util/json_tensor.cc: AddValueToTensor, FillTensorProto, AddInstanceItem, ParseJson
    "number for a string": (post(PREDICT, '{"instances": [123]}'), 400, element(
        0, "JSON Value: 123 Type: Number is not of expected type: string")),
    "ragged instances": (post(PREDICT, '{"signature_name": "predict_images", '
                                       '"instances": [[1, 2], [3]]}'), 400,
                         element(1, "Expecting tensor size: 2 but got: 1")),
    "ragged inputs": (post(PREDICT, '{"signature_name": "predict_images", '
                                    '"inputs": [[1, 2], [3]]}'), 400,
                      "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    "list below the leaves": (post(PREDICT, '{"signature_name": "predict_images", '
                                            '"inputs": [[1], [[2]]]}'), 400,
                              "Encountered list at unexpected level: 2 expected < 2"),
    "leaf above the leaves": (post(PREDICT, '{"signature_name": "predict_images", '
                                            '"inputs": [[1], 2]}'), 400,
                              "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. "
                              "Expected at level: 2"),
    "string for a float": (post(PREDICT, '{"signature_name": "predict_images", '
                                         '"inputs": ["1"]}'), 400,
                           'JSON Value: "1" Type: String is not of expected type: float'),
    "400 nines": (post(PREDICT, '{"signature_name": "predict_images", "instances": ['
                       + "9" * 400 + "]}"), 400,
                  "JSON Parse error: Number too big to be stored in double."),
    "5000 brackets": (post(PREDICT, '{"instances": ' + "[" * 5000 + "]" * 5000 + "}"), 400,
                      "JSON Parse error: The document nests too deeply to parse"),
    "300 brackets": (post(PREDICT, '{"instances": ' + "[" * 300 + "]" * 300 + "}"), 400,
                     element(0, "JSON Value nests lists more than 254 deep, the most "
                                "dimensions a tensor has")),
    "signature name not a string": (post(PREDICT, '{"signature_name": 5, "instances": [1]}'),
                                    400, 'JSON Value: {"signature_name":5,"instances":[1]} '
                                         "not formatted correctly. 'signature_name' key must "
                                         "be a string value."),
    "not UTF-8": (post(PREDICT, b"\xff\xfe\xfd"), 400,
                  "JSON Parse error: 'utf-8' codec can't decode byte 0xff in position 0: "
                  "invalid start byte"),
    "instances and inputs": (post(PREDICT, '{"instances": [1], "inputs": [1]}'), 400,
                             'JSON Value: {"instances":[1],"inputs":[1]} Not formatted '
                             "correctly expecting only one of 'inputs' or 'instances' keys "
                             "to exist "),
    # AddValueToFeature, MakeExampleFromJsonObject
    "null feature": (post(CLASSIFY, '{"examples": [{"a": null}]}'), 400,
                     "Feature: a has element with unexpected JSON type: Null"),
    "mixed feature": (post(CLASSIFY, '{"examples": [{"a": [1, 2.5]}]}'), 400,
                      "Unexpected element type in feature: a expecting type: int64"),
    "uint64 feature": (post(CLASSIFY, '{"examples": [{"a": 18446744073709551615}]}'), 400,
                       "Feature: a has uint64_t element. Only int64_t is supported."),
    "example not an object": (post(CLASSIFY, '{"examples": [[1]]}'), 400,
                              "Example must be JSON object but got JSON Array"),
    "no examples": (post(CLASSIFY, '{"examples": []}'), 400,
                    'JSON Value: {"examples":[]} \'examples\' value is an empty array'),
    # http_rest_api_util.cc (ParseModelInfo), http_rest_api_handler.cc
    "version over int64": (bare(f"GET /v1/models/{MODEL_NAME}/versions/"
                                f"99999999999999999999999 HTTP/1.1"), 400,
                           "Failed to convert version: 99999999999999999999999 to numeric."),
    "PUT": (bare(f"PUT /v1/models/{MODEL_NAME} HTTP/1.1"), 400,
            f"Malformed request: PUT /v1/models/{MODEL_NAME}"),
    "DELETE": (bare(f"DELETE /v1/models/{MODEL_NAME} HTTP/1.1"), 400,
               f"Malformed request: DELETE /v1/models/{MODEL_NAME}"),
    "PATCH": (bare(f"PATCH /v1/models/{MODEL_NAME} HTTP/1.1"), 400,
              f"Malformed request: PATCH /v1/models/{MODEL_NAME}"),
    # http_server.cc: only /v1/ paths are dispatched, OPTIONS is a CORS preflight
    "not /v1/": (bare("GET /foo HTTP/1.1"), 404, "Not Found: GET /foo"),
    "preflight without Origin": (bare(f"OPTIONS /v1/models/{MODEL_NAME} HTTP/1.1"), 400,
                                 "Origin header is missing in CORS preflight"),
    # libevent (evhttp_server.cc's allowed methods; evhttp_get_body_length's strtoll)
    "unknown method": (bare(f"FOO /v1/models/{MODEL_NAME} HTTP/1.1"), 501,
                       "Unsupported method ('FOO')"),
    "negative length": (bare(f"POST {PREDICT} HTTP/1.1", b"Content-Length: -5\r\n"), 400,
                        "Bad Content-Length: -5"),
    "length abc": (bare(f"POST {PREDICT} HTTP/1.1", b"Content-Length: abc\r\n"), 400,
                   "Bad Content-Length: abc"),
    "length 1e30": (bare(f"POST {PREDICT} HTTP/1.1", b"Content-Length: 1e30\r\n"), 400,
                    "Bad Content-Length: 1e30"),
    "length past the limit": (bare(f"POST {PREDICT} HTTP/1.1",
                                   b"Content-Length: 99999999999999999999\r\n"), 413,
                              "Content-Length 99999999999999999999 is over the limit of "
                              "2147483647 bytes"),
    "bad chunk size": (bare(f"POST {PREDICT} HTTP/1.1", b"Transfer-Encoding: chunked\r\n")
                       + b"ZZ\r\n", 400, "Bad chunk size line: b'ZZ\\r\\n'"),
    "chunked body is read": (chunked(PREDICT, b'{"instances": [123]}', 7), 400, element(
        0, "JSON Value: 123 Type: Number is not of expected type: string")),
    "gzipped body is read": (post(PREDICT, gzip.compress(b'{"instances": [123]}'),
                                  b"Content-Encoding: gzip\r\n"), 400, element(
        0, "JSON Value: 123 Type: Number is not of expected type: string")),
    "not gzip": (post(PREDICT, b"plain", b"Content-Encoding: gzip\r\n"), 400,
                 "Failed to uncompress the gzipped body (at most 104857600 bytes once "
                 "uncompressed)"),
    # the standard library's own refusals, as JSON
    "URI over 64 KiB": (bare("GET /v1/" + "a" * 70_000 + " HTTP/1.1"), 414,
                        "Request-URI Too Long"),
    "header over 64 KiB": (bare("GET /v1/models HTTP/1.1", b"X: " + b"a" * 70_000 + b"\r\n"),
                           431, "Line too long"),
    "garbage request line": (b"GARBAGE\r\n\r\n", 400, "Bad request syntax ('GARBAGE')"),
}


@pytest.mark.parametrize("row", HOSTILE, ids=list(HOSTILE))
def test_every_hostile_request_gets_a_json_4xx_with_its_message(server, row):
    data, status, message = HOSTILE[row]
    assert exchange(server.rest_port, data) == (status, json.dumps(
        {"error": message}, indent=1).encode())


def test_head_is_answered_without_a_body(server):
    assert exchange(server.rest_port, bare(f"HEAD /v1/models/{MODEL_NAME} HTTP/1.1"),
                    "HEAD") == (400, b"")


def test_a_chunked_request_is_served_and_the_connection_kept(server, exported):
    image = base64.b64encode(next(iter(exported.images.values()))).decode()
    body = json.dumps({"instances": [{"b64": image}]}).encode()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as sock:
        for request in (chunked(PREDICT, body, 1000), post(PREDICT, body)):
            sock.sendall(request)
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200
            assert len(json.loads(response.read())["predictions"]) == 1


def test_bad_requests_log_nothing(server):
    """TF Serving logs a bad request at VLOG(1) only, off by default; so does this
    server: the hostile table above left no line in its output."""
    for data, _, _ in HOSTILE.values():
        exchange(server.rest_port, data)
    time.sleep(0.5)  # the child's output is read by a thread
    assert not [line for line in server.output if "Traceback" in line or "Error" in line]


def test_a_50_byte_request_declaring_16m_strings_costs_no_memory(server, exported):
    """TensorFlow fills a tensor's missing values with its last one (tensor.cc
    FromProtoField), tensorflow_model_server as far as its allocator lets it; this
    server refuses a fill over 64 MiB before making it."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs["image_bytes"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[b"x"],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 16_777_216}])))
    assert request.ByteSize() < 60
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        before = rss_bytes(server.process.pid)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        took = time.monotonic() - start
        grown = rss_bytes(server.process.pid) - before
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "tensor parsing error: image_bytes: shape [16777216] of string, filled out from the "
        "values sent, takes 400 MiB, over the limit of 64 MiB")
    assert took < 1.0
    assert grown < 200 * 2**20, f"server RSS grew by {grown / 2**20:.0f} MB"


def _shape(*dims: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[{"size": d} for d in dims])


UNPARSABLE = "tensor parsing error: image_bytes"
HOSTILE_TENSORS = {
    "DT_VARIANT": (tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT, tensor_shape=_shape(1)),
                   UNPARSABLE),
    "DT_RESOURCE": (tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE,
                                           tensor_shape=_shape(1)), UNPARSABLE),
    "no such dtype": (tensor_pb2.TensorProto(dtype=999, tensor_shape=_shape(1)), UNPARSABLE),
    "unknown rank": (tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[b"x"],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True)), UNPARSABLE),
    "300 dimensions": (tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"],
                                              tensor_shape=_shape(*[1] * 300)), UNPARSABLE),
    "bad string content": (tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=_shape(3), tensor_content=b"\xff" * 10),
        UNPARSABLE),
    "complex fill": (tensor_pb2.TensorProto(dtype=types_pb2.DT_COMPLEX64, scomplex_val=[1, 2],
                                            tensor_shape=_shape(10**9)),
                     f"{UNPARSABLE}: shape [1000000000] of complex64, filled out from the "
                     f"values sent, takes 7629 MiB, over the limit of 64 MiB"),
}


def test_unparsable_grpc_tensors_are_invalid_argument_and_log_nothing(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for name, (proto, message) in HOSTILE_TENSORS.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL_NAME
            request.inputs["image_bytes"].CopyFrom(proto)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request, timeout=30)
            assert (raised.value.code(), raised.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, message), name
    time.sleep(0.5)
    assert not [line for line in server.output if "Exception" in line or "Error" in line]


@pytest.mark.slow
def test_good_requests_all_succeed_under_a_hostile_mix(server, exported):
    """benchmarks/hostile_mix.py, shorter: 200 idle connections, 10 stalling ones and the
    table above in a loop, while good REST and gRPC requests are timed."""
    from benchmarks.hostile_mix import run_mix

    result = run_mix(server, next(iter(exported.images.values())), seconds=8.0, idle=200,
                     stalls=10, hostile=1)
    assert result.failures == []
    assert len(result.latencies) > 10 and result.hostile_requests > len(HOSTILE)
