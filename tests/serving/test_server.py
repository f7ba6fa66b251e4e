"""The model server as a real child process on loopback, queried over gRPC.

One server process serves the whole module; the version pick-up and SIGTERM tests
change its state and run last.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import keras_alexnet
from serving import errors
from serving.client import Client
from serving.server import ServerProcess
from serving.tensors import to_ndarray, to_tensor_proto
from tests.serving.exported_model import (
    DATA_MEAN,
    MODEL_NAME,
    assert_same_top5,
    expected_top5,
    keras_probabilities,
)

POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def export_base(exported, tmp_path_factory) -> Path:
    """A copy of the shared export, which the version pick-up test adds a version to."""
    base = tmp_path_factory.mktemp("export")
    shutil.copytree(exported.model_dir, base / MODEL_NAME)
    return base


@pytest.fixture(scope="module")
def server(export_base):
    with ServerProcess(export_base / MODEL_NAME, MODEL_NAME,
                       f"--file_system_poll_wait_seconds={POLL_SECONDS}") as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address, MODEL_NAME, timeout=60, retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def expected(exported):
    names = list(exported.images)
    top5 = expected_top5(exported.model, list(exported.images.values()))
    assert len({tuple(n for n, _ in row) for row in top5}) > 1, "images must differ"
    return dict(zip(names, top5, strict=True))


def image_request(images: list[bytes], **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=MODEL_NAME, **spec))
    request.inputs["image_bytes"].CopyFrom(to_tensor_proto(np.array(images, dtype=object)))
    return request


def test_client_gets_the_keras_models_top5(client, exported, expected):
    results = client.classify(list(exported.images.values()))
    assert_same_top5(results, list(expected.values()))


def test_stock_stub_gets_the_top5_and_the_effective_model_spec(stub, exported, expected):
    response = stub.Predict(image_request(list(exported.images.values())), timeout=60)
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"probabilities", "top_k_indices", "top_k_scores",
                                     "top_k_labels"}
    labels = to_ndarray(response.outputs["top_k_labels"])
    scores = to_ndarray(response.outputs["top_k_scores"])
    actual = [[(n.decode(), float(s)) for n, s in zip(ln, ls, strict=True)]
              for ln, ls in zip(labels, scores, strict=True)]
    assert_same_top5(actual, list(expected.values()))
    # TF Serving answers with the typed fields by default, not tensor_content.
    assert response.outputs["top_k_scores"].float_val
    assert not response.outputs["top_k_scores"].tensor_content


def test_raw_pixel_signature_accepts_both_tensor_encodings(client, exported):
    pixels = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    typed = client.predict({"images": to_tensor_proto(pixels)}, signature_name="predict_images")
    packed = client.predict({"images": to_tensor_proto(pixels, tensor_content=True)},
                            signature_name="predict_images")
    assert typed.signature_name == "predict_images"
    reference = exported.model(pixels - np.float32([0.3, 0.5, 0.7]) * 255).numpy()
    np.testing.assert_allclose(typed.outputs["probabilities"], reference, atol=1e-5)
    np.testing.assert_array_equal(typed.outputs["probabilities"],
                                  packed.outputs["probabilities"])


def test_features_signature_returns_fc7(client, exported):
    image = next(iter(exported.images.values()))
    outputs = client.predict({"image_bytes": [image]}, signature_name="features").outputs
    fc7 = keras_alexnet.fc7_features(exported.model)
    assert outputs["fc7"].shape == (1, fc7.output_shape[-1])


def test_output_filter_returns_only_the_named_outputs(client, exported):
    image = next(iter(exported.images.values()))
    outputs = client.predict({"image_bytes": [image]}, output_filter=["top_k_labels"]).outputs
    assert set(outputs) == {"top_k_labels"}


def test_metadata_lists_the_signatures(client, stub):
    signatures = client.metadata()
    assert {"serving_default", "predict_images", "features"} <= set(signatures)
    inputs = signatures["serving_default"].inputs["image_bytes"]
    assert inputs.dtype == types_pb2.DT_STRING
    assert [d.size for d in inputs.tensor_shape.dim] == [-1]
    response = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME), metadata_field=["signature_def"]),
        timeout=30)
    assert response.model_spec.version.value == 1


def test_status_and_health(client):
    assert [(s.version, s.state) for s in client.status()] == [(1, "AVAILABLE")]
    for service in ("", "PredictionService", "ModelService"):
        assert client.health(service) == "SERVING"
    with pytest.raises(errors.NotFoundError) as raised:
        client.status(version=7)
    assert raised.value.message == "Could not find version 7 of model alexnet"


def _float_tensor_content(values) -> tensor_pb2.TensorProto:
    return to_tensor_proto(np.array(values, np.float32), tensor_content=True)


def _request(**changes):
    """A good single-image request with some fields replaced or added."""
    image = Image.new("RGB", (70, 70), (200, 30, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    request = image_request([buffer.getvalue()])
    for field, value in changes.items():
        if field == "inputs":
            request.ClearField("inputs")
            for alias, proto in value.items():
                request.inputs[alias].CopyFrom(proto)
        elif field == "extra_input":
            request.inputs["extra"].CopyFrom(value)
        elif field == "output_filter":
            request.output_filter.extend(value)
        else:
            setattr(request.model_spec, field, value) if field != "version" else \
                request.model_spec.version.__setattr__("value", value)
    return request


NOT_AN_IMAGE = to_tensor_proto(np.array([b"these bytes are no image"], dtype=object))
ERROR_ROWS = {
    "unknown model": (dict(name="resnet"), grpc.StatusCode.NOT_FOUND,
                      "Servable not found for request: Latest(resnet)"),
    "unknown version": (dict(version=99), grpc.StatusCode.NOT_FOUND,
                        "Servable not found for request: Specific(alexnet, 99)"),
    "unknown label": (dict(version_label="stable"), grpc.StatusCode.INVALID_ARGUMENT,
                      "Unrecognized servable version label: stable"),
    "unknown signature": (dict(signature_name="nope"), grpc.StatusCode.FAILED_PRECONDITION,
                          'Serving signature key "nope" not found.'),
    # tensorflow/cc/saved_model/util.cc (GetInputValues, TF Serving >= 2.14)
    "wrong input alias": (dict(inputs={"images": NOT_AN_IMAGE}),
                          grpc.StatusCode.INVALID_ARGUMENT,
                          "Signature input alias: image_bytes(feed name: "
                          "serving_default_image_bytes:0) not found in request and no default "
                          "value provided. Inputs expected to be in the request {images}, or "
                          "default input alias set: "),
    "huge declared shape": (dict(inputs={"image_bytes": tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[{"size": 10**12}]))}), grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: image_bytes: shape [1000000000000] of string, filled out "
        "from the values sent, takes 22888184 MiB, over the limit of 64 MiB"),
    "negative dim": (dict(inputs={"image_bytes": tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[{"size": -3}]))}),
        grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: image_bytes"),
    # server_core.cc
    "empty model name": (dict(name=""), grpc.StatusCode.INVALID_ARGUMENT,
                         "ModelSpec has no name specified."),
    "extra input": (dict(extra_input=NOT_AN_IMAGE), grpc.StatusCode.INVALID_ARGUMENT,
                    "input size does not match signature: 2!=1 len({extra,image_bytes}) != "
                    "len({image_bytes}). Sent extra: {extra}. Missing but required: {}."),
    "missing input": (dict(inputs={}), grpc.StatusCode.INVALID_ARGUMENT,
                      "input size does not match signature: 0!=1 len({}) != "
                      "len({image_bytes}). Sent extra: {}. Missing but required: "
                      "{image_bytes}."),
    "unknown output": (dict(output_filter=["logits"]), grpc.StatusCode.INVALID_ARGUMENT,
                       "output tensor alias not found in signature: logits Outputs expected "
                       "to be in the set {probabilities,top_k_indices,top_k_labels,"
                       "top_k_scores}."),
    "duplicate output": (dict(output_filter=["probabilities", "probabilities"]),
                         grpc.StatusCode.INVALID_ARGUMENT,
                         "duplicate output tensor alias: probabilities"),
    "wrong dtype": (dict(inputs={"image_bytes": _float_tensor_content([1.0, 2.0])}),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Expects arg[0] to be string but float is provided"),
    "unparsable tensor": (dict(inputs={"image_bytes": tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=to_tensor_proto([1.0, 2.0]).tensor_shape,
        tensor_content=b"\x00" * 5)}), grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: image_bytes"),
    "wrong shape": (dict(inputs={"image_bytes": to_tensor_proto(
        np.array([[b"a", b"b"]], dtype=object))}), grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias image_bytes has shape [1, 2], which is not compatible with the "
        "signature's (None,)"),
    "no image": (dict(inputs={"image_bytes": NOT_AN_IMAGE}), grpc.StatusCode.INVALID_ARGUMENT,
                 "assertion failed: [not a JPEG or PNG image]"),
}


@pytest.mark.parametrize("row", ERROR_ROWS, ids=list(ERROR_ROWS))
def test_errors_get_tf_servings_code_and_message_and_the_server_keeps_serving(
        row, stub, client, exported, expected):
    changes, code, message = ERROR_ROWS[row]
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(_request(**changes), timeout=30)
    assert raised.value.code() == code
    if row == "no image":
        assert raised.value.details().startswith(message)
    else:
        assert raised.value.details() == message
    name, image = next(iter(exported.images.items()))
    assert_same_top5(client.classify([image]), [expected[name]])


def test_client_raises_typed_errors_with_the_servers_message(exported, server):
    image = next(iter(exported.images.values()))
    with Client(server.address, "resnet", retries=0) as wrong_model, \
            pytest.raises(errors.NotFoundError) as raised:
        wrong_model.classify([image])
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.message == "Servable not found for request: Latest(resnet)"


def test_metadata_errors_and_empty_requests(stub, server):
    spec = model_pb2.ModelSpec(name=MODEL_NAME)
    for fields, message in [([], "GetModelMetadataRequest must specify at least one "
                                 "metadata_field"),
                            (["signature_def", "graph"], "Metadata field graph is not "
                                                          "supported")]:
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=fields), timeout=30)
        assert (raised.value.code(), raised.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, message)
    # multi_inference_helper.cc takes the first task's spec: none, an empty name.
    with pytest.raises(grpc.RpcError) as raised:
        stub.MultiInference(inference_pb2.MultiInferenceRequest(), timeout=30)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    # model_service_impl.cc
    with grpc.insecure_channel(server.address) as channel, \
            pytest.raises(grpc.RpcError) as raised:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(), timeout=30)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported")


def example(image: bytes, **more: bytes) -> example_pb2.Example:
    return example_pb2.Example(features=feature_pb2.Features(feature={
        key: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))
        for key, value in {"image/encoded": image, **more}.items()}))


def test_classify_answers_with_the_classify_signature(stub, exported, expected):
    names = list(exported.images)
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name="classify"))
    request.input.example_list.examples.extend(example(exported.images[n]) for n in names)
    response = stub.Classify(request, timeout=60)
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "classify"
    for name, classifications in zip(names, response.result.classifications, strict=True):
        got = [(c.label, c.score) for c in classifications.classes]
        assert_same_top5([got], [expected[name]])

    # With a context (its features merged into each example, as TF Serving does).
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name="classify"))
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(exported.images[names[1]], source=b"camera"))
    listed.examples.extend([example(exported.images[names[0]]),
                            example_pb2.Example(features=feature_pb2.Features(feature={
                                "note": feature_pb2.Feature()}))])
    labels = [[c.label for c in row.classes]
              for row in stub.Classify(request, timeout=60).result.classifications]
    assert labels == [[n for n, _ in expected[names[0]]], [n for n, _ in expected[names[1]]]]


@pytest.mark.parametrize(("signature", "examples", "message"), [
    ("", 1, "Expected classification signature method_name to be "
            "tensorflow/serving/classify. Was: tensorflow/serving/predict"),
    ("nope", 1, "No signature was found with the name: nope"),
    ("classify", 0, "Input is empty."),
])
def test_classify_errors_are_tf_servings(stub, exported, signature, examples, message):
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name=signature))
    image = next(iter(exported.images.values()))
    request.input.example_list.examples.extend([example(image)] * examples)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(request, timeout=30)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, message)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_10000x10000_jpeg_is_served_at_a_bounded_memory_cost(server, stub, exported):
    buffer = io.BytesIO()
    Image.new("RGB", (10_000, 10_000), (200, 120, 40)).save(buffer, format="JPEG",
                                                             quality=90)
    huge = buffer.getvalue()
    small = next(iter(exported.images.values()))
    stub.Predict(image_request([small]), timeout=60)  # everything traced and allocated
    before = rss_bytes(server.process.pid)
    results = []

    def send():
        results.append(stub.Predict(image_request([huge]), timeout=120))

    threads = [threading.Thread(target=send) for _ in range(2)]  # two in flight at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grown = rss_bytes(server.process.pid) - before
    assert len(results) == 2
    probabilities = to_ndarray(results[0].outputs["probabilities"])
    # Decoded at 1/8 scale (1250x1250, then rescaled): a flat colour stays flat, so the
    # model sees what a small image of that colour gives it.
    flat = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 120, 40)).save(flat, format="JPEG", quality=90)
    np.testing.assert_allclose(probabilities[0], expected_top5_probabilities(
        exported, flat.getvalue()), atol=2e-3)
    assert grown < 200 * 1024 * 1024, f"server RSS grew by {grown / 2**20:.0f} MB"


def expected_top5_probabilities(exported, image: bytes) -> np.ndarray:
    return keras_probabilities(exported.model, DATA_MEAN, [image])[0]


def test_an_image_over_the_pixel_limit_is_refused_naming_its_size(stub):
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 2000), (10, 20, 30)).save(buffer, format="PNG")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(image_request([buffer.getvalue()]), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("PNG of 5000x2000 pixels (width x height) decoded at 1/1 scale is over the limit "
            "of 8,388,608 pixels; send a smaller image") in raised.value.details()


def test_missing_model_spec_and_string_tensor_content(stub, exported, expected):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_pb2.PredictRequest(), timeout=30)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    # Strings in tensor_content (TensorFlow's varint-length encoding), as TF Serving
    # accepts them.
    name, image = next(iter(exported.images.items()))
    request = image_request([image])
    request.inputs["image_bytes"].CopyFrom(to_tensor_proto(
        np.array([image], dtype=object), tensor_content=True))
    assert request.inputs["image_bytes"].tensor_content and \
        not request.inputs["image_bytes"].string_val
    response = stub.Predict(request, timeout=60)
    labels = to_ndarray(response.outputs["top_k_labels"])[0]
    assert [label.decode() for label in labels] == [n for n, _ in expected[name]]


def test_empty_batch_gets_empty_outputs(client):
    outputs = client.predict({"image_bytes": np.array([], dtype=object)}).outputs
    assert outputs["probabilities"].shape == (0, 10)
    assert outputs["top_k_labels"].shape == (0, 5)


def test_request_over_grpcs_default_4mb_is_served(stub, exported):
    noise = np.random.default_rng(2).integers(0, 256, (1300, 1300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    big = buffer.getvalue()
    assert len(big) > 4 * 1024 * 1024
    response = stub.Predict(image_request([big]), timeout=60)
    probabilities = to_ndarray(response.outputs["probabilities"])
    expected = expected_top5(exported.model, [big])
    np.testing.assert_allclose(probabilities[0].max(), expected[0][0][1], atol=1e-5)


def test_query_and_status_commands(server, exported, expected, tmp_path, capsys):
    from serving.__main__ import main

    name, image = next(iter(exported.images.items()))
    (tmp_path / name).write_bytes(image)
    assert main(["query", "--server", server.address, str(tmp_path / name)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / name)
    assert [line.split(None, 2)[2] for line in lines[1:]] == [n for n, _ in expected[name]]
    assert main(["status", "--server", server.address]) == 0
    assert "alexnet version 1: AVAILABLE" in capsys.readouterr().out
    assert main(["query", "--server", server.address, "--model_name", "resnet",
                 str(tmp_path / name)]) == 1
    assert capsys.readouterr().err == (
        f"error: NOT_FOUND: Servable not found for request: Latest(resnet); {server.address} "
        f"serves no model named 'resnet': pass --model_name with the name the server was "
        f"started with (`serve --model_name`; TF Serving's default is 'default')\n")
    (tmp_path / "notes.jpg").write_text("not a photo")
    assert main(["query", "--server", server.address, str(tmp_path / name),
                 str(tmp_path / "notes.jpg")]) == 1
    assert capsys.readouterr().err == (f"error: INVALID_ARGUMENT: {tmp_path / 'notes.jpg'}: "
                                       f"refused by the server: not a JPEG or PNG image\n")


CLIENT_PROCESS = """
import sys
from serving.__main__ import main
status = main(["query", "--server", sys.argv[1], sys.argv[2]])
assert status == 0 and "tensorflow" not in sys.modules, sorted(sys.modules)
# TensorFlow loads afterwards all the same, with the client's message classes.
import tensorflow as tf
from serving.tensors import to_tensor_proto
assert type(tf.make_tensor_proto([1.0])) is type(to_tensor_proto([1.0]))
print(tf.make_ndarray(to_tensor_proto([[2.5]]))[0, 0] + tf.constant(1.0).numpy())
"""


def test_query_command_never_loads_tensorflow(server, exported, expected, tmp_path):
    name, image = next(iter(exported.images.items()))
    (tmp_path / name).write_bytes(image)
    done = subprocess.run([sys.executable, "-c", CLIENT_PROCESS, server.address,
                           str(tmp_path / name)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[1].split(None, 2)[2] == expected[name][0][0]
    assert lines[-1] == "3.5"


def test_32_concurrent_clients(server, exported, expected):
    names = list(exported.images)
    failures, results = [], {}

    def query(worker: int):
        name = names[worker % len(names)]
        try:
            with Client(server.address, MODEL_NAME, timeout=120, retries=0) as own:
                results[worker] = [own.classify([exported.images[name]])[0] for _ in range(2)]
        except Exception as error:  # collected: the test reports every failure
            failures.append(error)

    threads = [threading.Thread(target=query, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for worker, top5s in results.items():
        for top5 in top5s:
            assert_same_top5([top5], [expected[names[worker % len(names)]]])


def test_a_new_version_is_picked_up_without_failing_requests(server, client, exported,
                                                               export_base, expected):
    name, image = next(iter(exported.images.items()))
    failures, stop = [], threading.Event()

    def keep_querying():
        while not stop.is_set():
            try:
                client.classify([image])
            except Exception as error:  # collected: any failure fails the test
                failures.append(error)

    worker = threading.Thread(target=keep_querying)
    worker.start()
    try:
        keras_alexnet.export(exported.checkpoint, export_base, MODEL_NAME)
        for _ in range(600):
            prediction = client.predict({"image_bytes": [image]})
            if prediction.version == 2:
                break
            threading.Event().wait(POLL_SECONDS)
        assert prediction.version == 2
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert [(s.version, s.state) for s in client.status()] == [(2, "AVAILABLE"), (1, "END")]
    with pytest.raises(errors.NotFoundError, match=r"Specific\(alexnet, 1\)"):
        client.classify([image], version=1)
    assert_same_top5(client.classify([image], version=2), [expected[name]])


def test_sigterm_stops_the_server_cleanly(server):
    assert server.stop() == 143  # after a clean stop, as every tool after SIGTERM
    assert "Server stopped" in server.output
