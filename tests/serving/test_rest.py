"""The REST API (`--rest_api_port`): TF Serving's paths, JSON formats and errors, checked
with a plain HTTP client against the gRPC answers of the same server."""

from __future__ import annotations

import base64
import json
import socket
import types
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving import errors
from serving.client import Client
from serving.server import ServerProcess
from tests.serving.exported_model import MODEL_NAME, assert_same_top5, expected_top5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(exported):
    port = free_port()
    with ServerProcess(exported.model_dir, MODEL_NAME, f"--rest_api_port={port}") as process:
        assert f"Exporting HTTP/REST API at:127.0.0.1:{port} ..." in process.output
        process.rest = f"http://127.0.0.1:{port}"
        yield process


def call(server, path: str, body=None, method: str | None = None):
    """(HTTP status, JSON) of a request; `body` a dict (sent as JSON) or raw bytes."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rest + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def b64(image: bytes) -> dict:
    return {"b64": base64.b64encode(image).decode()}


def test_predict_row_format_with_b64_images_equals_grpc(server, exported):
    names = list(exported.images)
    status, answer = call(server, f"/v1/models/{MODEL_NAME}:predict",
                          {"instances": [b64(exported.images[n]) for n in names]})
    assert status == 200
    rows = answer["predictions"]
    assert len(rows) == len(names)
    assert set(rows[0]) == {"probabilities", "top_k_indices", "top_k_scores", "top_k_labels"}
    expected = expected_top5(exported.model, [exported.images[n] for n in names])
    got = [list(zip(row["top_k_labels"], row["top_k_scores"], strict=True)) for row in rows]
    assert_same_top5(got, expected)
    with Client(f"127.0.0.1:{server.port}", MODEL_NAME) as client:
        assert_same_top5(client.classify([exported.images[n] for n in names]), got)


def test_predict_columnar_format_named_inputs_and_versions(server, exported):
    image = next(iter(exported.images.values()))
    for path in (f"/v1/models/{MODEL_NAME}:predict",
                 f"/v1/models/{MODEL_NAME}/versions/1:predict"):
        status, answer = call(server, path, {"signature_name": "serving_default",
                                             "inputs": {"image_bytes": [b64(image)]}})
        assert status == 200
        outputs = answer["outputs"]
        assert np.array(outputs["probabilities"]).shape == (1, 10)
        assert outputs["top_k_labels"][0] == [n for n, _ in expected_top5(
            exported.model, [image])[0]]
    pixels = np.full((1, 64, 64, 3), 100.0).tolist()
    status, answer = call(server, f"/v1/models/{MODEL_NAME}:predict",
                          {"signature_name": "predict_images", "instances": pixels})
    assert status == 200 and len(answer["predictions"]) == 1


def test_classify_status_and_metadata(server, exported):
    image = next(iter(exported.images.values()))
    status, answer = call(server, f"/v1/models/{MODEL_NAME}:classify",
                          {"signature_name": "classify",
                           "examples": [{"image/encoded": b64(image)}]})
    assert status == 200
    assert [label for label, _ in answer["results"][0]] == [
        n for n, _ in expected_top5(exported.model, [image])[0]]

    status, answer = call(server, f"/v1/models/{MODEL_NAME}")
    assert (status, answer) == (200, {"model_version_status": [{
        "version": "1", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]})
    status, answer = call(server, f"/v1/models/{MODEL_NAME}/versions/1/metadata")
    assert status == 200
    assert answer["model_spec"]["name"] == MODEL_NAME
    assert answer["model_spec"]["version"] == "1"
    default = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize(("method", "path", "body", "code", "message"), [
    # model_servers/http_rest_api_handler.cc
    ("GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    # model_servers/http_rest_api_util.cc (a version and a label: neither path matches)
    ("POST", f"/v1/models/{MODEL_NAME}/versions/1/labels/x:predict", None, 400,
     "Malformed request: POST /v1/models/alexnet/versions/1/labels/x:predict"),
    # util/json_tensor.cc
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"signature_name": "serving_default"},
     400, "Missing 'inputs' or 'instances' key"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", b"", 400,
     "JSON Parse error: The document is empty"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [{"b64": "%%%"}]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to "
     "base64 decode"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"signature_name": "nope",
                                                  "instances": [1]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    # the servable manager: TF Serving's gRPC message, HTTP 404
    ("GET", "/v1/models/resnet", None, 404,
     "Could not find any versions of model resnet"),
    ("POST", "/v1/models/resnet:predict", {"instances": [1]}, 404,
     "Servable not found for request: Latest(resnet)"),
])
def test_errors_are_json_with_tf_servings_status(server, method, path, body, code, message):
    status, answer = call(server, path, body, method)
    assert (status, answer) == (code, {"error": message})


def test_prometheus_metrics_with_tf_servings_names(exported, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from serving.server import ModelServer

    config = tmp_path / "monitoring.txt"
    config.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    image = next(iter(exported.images.values()))
    with ModelServer(exported.model_dir, MODEL_NAME, port=0, rest_api_port=free_port(),
                     monitoring_config_file=config) as running:
        rest = types.SimpleNamespace(rest=f"http://127.0.0.1:{running.rest.port}")
        with Client(running.address, MODEL_NAME) as client:
            client.classify([image])
        with Client(running.address, "resnet", retries=0) as unknown, \
                pytest.raises(errors.NotFoundError):
            unknown.classify([image])
        assert call(rest, f"/v1/models/{MODEL_NAME}:predict",
                    {"instances": [b64(image)]})[0] == 200
        with urllib.request.urlopen(rest.rest + "/metrics", timeout=30) as answer:
            text = answer.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    count = ":tensorflow:serving:request_count"
    assert samples[(count, (("model_name", MODEL_NAME), ("status", "OK")))] == 2
    assert samples[(count, (("model_name", "resnet"), ("status", "NOT_FOUND")))] == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert samples[(latency, (("API", "Predict"), ("entrypoint", "GRPC"),
                              ("model_name", MODEL_NAME)))] == 1
    assert samples[(latency, (("API", "predict"), ("entrypoint", "REST"),
                              ("model_name", MODEL_NAME)))] == 1
    assert f'{count}{{model_name="{MODEL_NAME}",status="OK"}} 2.0' in text
