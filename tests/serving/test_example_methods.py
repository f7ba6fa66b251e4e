"""Classify, Regress and MultiInference on tf.Example signatures (TF Serving's
half_plus_two shape), over gRPC and REST, and TF Serving's messages for signatures and
requests that do not fit (servables/tensorflow/classifier.cc, regressor.cc,
multi_inference.cc)."""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.server import ModelServer
from tests.serving.test_rest import free_port

EXAMPLE = tf.TensorSpec([None], tf.string, name="inputs")


def x_of(inputs):
    return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]


class HalfPlusTwo(tf.Module):
    """y = 0.5 x + 2 on tf.Example feature "x", as TF Serving's test model."""

    @tf.function(input_signature=[EXAMPLE])
    def regress(self, inputs):
        return {"outputs": 0.5 * x_of(inputs) + 2.0}

    @tf.function(input_signature=[EXAMPLE])
    def classify(self, inputs):
        scores = 0.5 * x_of(inputs) + 2.0
        return {"scores": scores, "classes": tf.fill(tf.shape(scores), "half")}

    @tf.function(input_signature=[EXAMPLE])
    def four_outputs(self, inputs):
        x = x_of(inputs)
        return {"a": x, "b": x, "c": x, "d": x}

    @tf.function(input_signature=[EXAMPLE])
    def wrong_rank(self, inputs):
        return {"outputs": tf.reshape(x_of(inputs), [-1, 1, 1])}


METHODS = {"regress": "tensorflow/serving/regress", "classify": "tensorflow/serving/classify",
           "four_outputs": "tensorflow/serving/classify",
           "wrong_rank": "tensorflow/serving/regress"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("half_plus_two")
    module = HalfPlusTwo()
    tf.saved_model.save(module, str(base / "1"), signatures={
        name: getattr(module, name) for name in METHODS})
    path = base / "1" / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    for name, method in METHODS.items():
        saved.meta_graphs[0].signature_def[name].method_name = method
    path.write_bytes(saved.SerializeToString())
    with ModelServer(base, "half_plus_two", port=0, rest_api_port=free_port()) as running:
        channel = grpc.insecure_channel(running.address)
        running.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        yield running
        channel.close()


def examples(*values: float) -> list[example_pb2.Example]:
    return [example_pb2.Example(features=feature_pb2.Features(feature={
        "x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[v]))}))
        for v in values]


def test_regress_and_classify_over_grpc_and_rest(server):
    spec = model_pb2.ModelSpec(name="half_plus_two", signature_name="regress")
    request = regression_pb2.RegressionRequest(model_spec=spec)
    request.input.example_list.examples.extend(examples(1.0, 2.0, 5.0))
    response = server.stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [2.5, 3.0, 4.5]

    spec = model_pb2.ModelSpec(name="half_plus_two", signature_name="classify")
    request = classification_pb2.ClassificationRequest(model_spec=spec)
    request.input.example_list.examples.extend(examples(4.0))
    classes = server.stub.Classify(request, timeout=30).result.classifications[0].classes
    assert [(c.label, c.score) for c in classes] == [("half", 4.0)]

    url = f"http://127.0.0.1:{server.rest.port}/v1/models/half_plus_two"
    for verb, signature, expected in (("regress", "regress", [2.5, 3.0]),
                                      ("classify", "classify", [[["half", 2.5]],
                                                                [["half", 3.0]]])):
        body = json.dumps({"signature_name": signature,
                           "examples": [{"x": 1.0}, {"x": 2.0}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"{url}:{verb}", data=body), timeout=30) as answer:
            assert json.loads(answer.read()) == {"results": expected}


@pytest.mark.parametrize(("method", "signature", "message"), [
    ("Regress", "classify", "Expected regression signature method_name to be "
                            "tensorflow/serving/regress. Was: tensorflow/serving/classify"),
    ("Classify", "four_outputs", "Expected one or two output Tensors, found 4"),
    # shapes as tensorflow/core/framework/tensor_shape.cc's DebugString writes them
    ("Regress", "wrong_rank", "Expected output Tensor shape to be either [batch_size] or "
                              "[batch_size, 1] but got [1,1,1]"),
    ("Regress", "nope", "No signature was found with the name: nope"),
])
def test_signatures_that_do_not_fit_get_tf_servings_messages(server, method, signature,
                                                             message):
    spec = model_pb2.ModelSpec(name="half_plus_two", signature_name=signature)
    kind = regression_pb2.RegressionRequest if method == "Regress" else \
        classification_pb2.ClassificationRequest
    request = kind(model_spec=spec)
    request.input.example_list.examples.extend(examples(1.0))
    with pytest.raises(grpc.RpcError) as raised:
        getattr(server.stub, method)(request, timeout=30)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, message)


def multi_inference(*tasks: tuple[str, str, str], values=(1.0, 6.0)
                    ) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        request.tasks.add(model_spec=model_pb2.ModelSpec(name=model, signature_name=signature),
                          method_name=METHODS.get(method, method))
    request.input.example_list.examples.extend(examples(*values))
    return request


def test_multi_inference_runs_each_task_on_the_same_examples(server):
    response = server.stub.MultiInference(multi_inference(
        ("half_plus_two", "classify", "classify"), ("half_plus_two", "regress", "regress")),
        timeout=30)
    classification, regression = response.results
    assert [[(c.label, c.score) for c in row.classes]
            for row in classification.classification_result.classifications] == [
        [("half", 2.5)], [("half", 5.0)]]  # 0.5 x + 2
    assert [r.value for r in regression.regression_result.regressions] == [2.5, 5.0]
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value)
            for r in response.results] == [("half_plus_two", "classify", 1),
                                           ("half_plus_two", "regress", 1)]


@pytest.mark.parametrize(("tasks", "code", "message"), [
    ((("half_plus_two", "classify", "classify"), ("other", "regress", "regress")),
     grpc.StatusCode.INVALID_ARGUMENT,
     "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
    ((("half_plus_two", "regress", "regress"), ("half_plus_two", "regress", "regress")),
     grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress"),
    ((("half_plus_two", "nope", "regress"),), grpc.StatusCode.INVALID_ARGUMENT,
     "Requested signature not found in model graph: nope"),
    ((("half_plus_two", "regress", "tensorflow/serving/predict"),),
     grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name: tensorflow/serving/predict"),
    ((("half_plus_two", "regress", "classify"),), grpc.StatusCode.INVALID_ARGUMENT,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/regress"),
    ((("missing", "regress", "regress"),), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(missing)"),
])
def test_multi_inference_errors_are_tf_servings(server, tasks, code, message):
    with pytest.raises(grpc.RpcError) as raised:
        server.stub.MultiInference(multi_inference(*tasks), timeout=30)
    assert (raised.value.code(), raised.value.details()) == (code, message)
