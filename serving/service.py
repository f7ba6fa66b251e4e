"""The gRPC servicers: `PredictionService` and `ModelService` over a `ServerCore`.

Built on the stock generated servicer bases of tensorflow-serving-api, every method of
both services overridden.  Every error a client can cause carries TF Serving's status
code and message.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.batching import BatchScheduler
from serving.errors import InvalidArgumentError, ServingError, UnimplementedError
from serving.monitoring import Metrics
from serving.server_core import ServerCore
from serving.tensors import data_type, dtype_name, fill_bytes, to_ndarray, to_tensor_proto

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"
CLASSIFY_METHOD = "tensorflow/serving/classify"  # TF Serving's kClassifyMethodName
REGRESS_METHOD = "tensorflow/serving/regress"  # kRegressMethodName
EXAMPLE_INPUTS = "inputs"  # kClassifyInputs, kRegressInputs
REGRESS_OUTPUTS = "outputs"  # kRegressOutputs; Classify's are "classes" and/or "scores"


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """A Classify request's examples as one string tensor, as TF Serving feeds them: with
    a context, each example is the context's serialization followed by its own (a
    protobuf merge, the example's features winning)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    if not serialized:
        raise InvalidArgumentError("Input is empty.")
    return np.array(serialized, dtype=object)


def _fill_spec(response, request, servable, signature_name: str) -> None:
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name


def _require_model_spec(request) -> None:
    if not request.HasField("model_spec"):  # predict_impl.cc, classification_service.cc
        raise InvalidArgumentError("Missing ModelSpec")


def _rpc(method, api: str | None = None):
    """The gRPC method of a servicer's `method(request)`: a `ServingError` becomes the
    call's status code and message; the prediction APIs (`api`) are counted and timed
    when the servicer has metrics.  (The REST API calls `method` itself.)"""
    @functools.wraps(method)
    def wrapper(self, request, context):
        metrics = getattr(self, "_metrics", None)
        try:
            if api is None or metrics is None:
                return method(self, request)
            return metrics.timed(request.model_spec.name, api, "GRPC",
                                 lambda: method(self, request))
        except ServingError as error:
            context.abort(error.code, error.message)
    return wrapper


# --- TF Serving's request pre-processing (predict_util.cc, saved_model/util.cc) ------

def parse_inputs(signature: meta_graph_pb2.SignatureDef, request) -> dict[str, np.ndarray]:
    """`PreProcessPrediction`: the request's inputs checked against the signature, in
    TF Serving's order and with its messages."""
    request_inputs, signature_inputs = set(request.inputs), set(signature.inputs)
    if len(request_inputs) > len(signature_inputs) or (
            len(request_inputs) < len(signature_inputs) and not signature.defaults):
        raise InvalidArgumentError(
            f"input size does not match signature: {len(request_inputs)}!="
            f"{len(signature_inputs)} len({{{','.join(sorted(request_inputs))}}}) != "
            f"len({{{','.join(sorted(signature_inputs))}}}). Sent extra: "
            f"{{{','.join(sorted(request_inputs - signature_inputs))}}}. Missing but required: "
            f"{{{','.join(sorted(signature_inputs - request_inputs))}}}.")
    # tensorflow/cc/saved_model/util.cc GetInputValues (TF Serving 2.14 and later).
    arrays = {}
    for alias in sorted(signature.inputs):
        if alias not in request.inputs:
            if alias in signature.defaults:
                continue
            raise InvalidArgumentError(
                f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) "
                f"not found in request and no default value provided. Inputs expected to be "
                f"in the request {{{','.join(sorted(request_inputs))}}}, or default input "
                f"alias set: {','.join(sorted(signature.defaults))}")
        arrays[alias] = _parse_tensor(request.inputs[alias], alias)
    if request_inputs and len(arrays) != len(request_inputs):
        raise InvalidArgumentError(
            f"Inputs contains invalid name. Used request inputs: "
            f"{','.join(sorted(arrays))}, request input: {','.join(sorted(request_inputs))}")
    return arrays


#: The memory a request's tensors may declare beyond the values they send (TensorFlow
#: fills those out with the last value): what a fill may cost before it is spent.
#: tensorflow_model_server fills as far as its allocator lets it; this server refuses
#: earlier, naming the shape and this limit.
MAX_FILL_BYTES = 64 << 20
#: TensorShape's limit: a shape whose element count does not fit an int64 is invalid.
MAX_ELEMENTS = 2**63 - 1


def _parse_tensor(proto, alias: str) -> np.ndarray:
    """`Tensor::FromProto`, refusing what it would refuse (an unknown dtype, an invalid
    shape, values that do not make the shape) and a fill over `MAX_FILL_BYTES`."""
    unparsable = InvalidArgumentError(f"tensor parsing error: {alias}")
    dims = [d.size for d in proto.tensor_shape.dim]
    elements = math.prod(dims)
    if (proto.dtype == types_pb2.DT_INVALID or proto.tensor_shape.unknown_rank
            or any(d < 0 for d in dims) or elements > MAX_ELEMENTS):
        raise unparsable
    try:
        filled = fill_bytes(proto, elements)
    except TypeError:  # not a TensorFlow dtype
        raise unparsable from None
    if filled > MAX_FILL_BYTES:
        raise InvalidArgumentError(
            f"tensor parsing error: {alias}: shape [{','.join(map(str, dims))}] of "
            f"{dtype_name(proto.dtype)}, filled out from the values sent, takes "
            f"{filled / 2**20:.0f} MiB, over the limit of {MAX_FILL_BYTES >> 20} MiB")
    try:
        return to_ndarray(proto)
    except (ValueError, TypeError, KeyError, MemoryError):  # KeyError: DT_VARIANT, ...
        raise unparsable from None


def check_output_filter(signature: meta_graph_pb2.SignatureDef, output_filter) -> list[str]:
    """The output aliases to return: the filter, checked, or every output."""
    seen = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgumentError(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise InvalidArgumentError(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)


# --- Classify and Regress (classifier.cc, regressor.cc) ------------------------------

def check_example_signature(signature: meta_graph_pb2.SignatureDef, method: str) -> None:
    """`PreProcessClassification` / `PreProcessRegression`: a tf.Example signature of
    the right method, input and outputs."""
    kind = EXAMPLE_METHODS[method][0]
    if signature.method_name != method:
        raise InvalidArgumentError(f"Expected {kind} signature method_name to be {method}. "
                                   f"Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise InvalidArgumentError("Expected one input Tensor.")
    debug = text_format.MessageToString(signature)
    if method == CLASSIFY_METHOD:
        if len(signature.outputs) not in (1, 2):
            raise InvalidArgumentError(f"Expected one or two output Tensors, found "
                                       f"{len(signature.outputs)}")
        if EXAMPLE_INPUTS not in signature.inputs:
            raise InvalidArgumentError(f"No classification inputs found in SignatureDef: "
                                       f"{debug}")
        if not {"classes", "scores"} & set(signature.outputs):
            raise InvalidArgumentError(
                f'Expected classification signature outputs to contain at least one of '
                f'"classes" or "scores". Signature was: {debug}')
        return
    if len(signature.outputs) != 1:
        raise InvalidArgumentError("Expected one output Tensor.")
    if EXAMPLE_INPUTS not in signature.inputs:
        raise InvalidArgumentError(f"No regression inputs found in SignatureDef: {debug}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise InvalidArgumentError(f"No regression outputs found in SignatureDef: {debug}")


def _shape(array: np.ndarray) -> str:
    return f"[{','.join(str(d) for d in array.shape)}]"  # TensorShape::DebugString


def classification_result(signature: meta_graph_pb2.SignatureDef, num_examples: int,
                          outputs: dict[str, np.ndarray],
                          result: classification_pb2.ClassificationResult) -> None:
    """`PostProcessClassificationResult`: the classes and scores checked, into `result`."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for array, dtype, what, name in (
            (classes, object, "classes Tensor of DT_STRING", "classes"),
            (scores, np.float32, "scores Tensor of DT_FLOAT", "scores")):
        if array is None:
            continue
        if array.ndim != 2:
            raise InvalidArgumentError(f"Expected Tensor shape: [batch_size num_classes] "
                                       f"but got {_shape(array)}")
        if array.dtype != dtype:
            raise InvalidArgumentError(f"Expected {what}. Got: "
                                       f"{types_pb2.DataType.Name(data_type(array))}")
        if len(array) != num_examples:
            raise InvalidArgumentError(f"Expected {name} output batch size of "
                                       f"{num_examples}. Got: {len(array)}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgumentError(f"Tensors class and score should match in dim_size(1). "
                                   f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(width):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = classes[row, column].decode(errors="replace")
            if scores is not None:
                entry.score = float(scores[row, column])


def regression_result(signature: meta_graph_pb2.SignatureDef, num_examples: int,
                      outputs: dict[str, np.ndarray],
                      result: regression_pb2.RegressionResult) -> None:
    """`PostProcessRegressionResult`: the one output checked, into `result`."""
    values = outputs[REGRESS_OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgumentError(f"Expected output Tensor shape to be either "
                                   f"[batch_size] or [batch_size, 1] but got "
                                   f"{_shape(values)}")
    if len(values) != num_examples:
        raise InvalidArgumentError(f"Input batch size did not match output batch size: "
                                   f"{num_examples} vs. {len(values)}")
    if values.dtype != np.float32:
        raise InvalidArgumentError(f"Expected output Tensor of DT_FLOAT.  Got: "
                                   f"{types_pb2.DataType.Name(data_type(values))}")
    for value in values.reshape(-1):
        result.regressions.add(value=float(value))


#: The tf.Example methods: what TF Serving's messages call each, its post-processing and
#: the field of a MultiInference result it fills.
EXAMPLE_METHODS = {
    CLASSIFY_METHOD: ("classification", classification_result, "classification_result"),
    REGRESS_METHOD: ("regression", regression_result, "regression_result"),
}


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServerCore, batcher: BatchScheduler | None = None,
                 tensor_content: bool = False, metrics: Metrics | None = None):
        self._core = core
        self._metrics = metrics
        self._batcher = batcher
        self._tensor_content = tensor_content

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        _require_model_spec(request)
        servable = self._core.get(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_def(signature_name)
        inputs = parse_inputs(signature, request)
        aliases = check_output_filter(signature, request.output_filter)
        run = functools.partial(servable.run, signature_name)
        if self._batcher is None:
            outputs = run(inputs)
        else:
            key = (servable.version, signature_name,
                   tuple((alias, array.dtype.str, array.shape[1:])
                         for alias, array in sorted(inputs.items())))
            outputs = self._batcher.run(key, run, inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias in aliases:
            response.outputs[alias].CopyFrom(
                to_tensor_proto(outputs[alias], tensor_content=self._tensor_content))
        return response

    def _example_method(self, request, response, method: str):
        """classification_service.cc / regression_service.cc: a Classify or Regress
        request run on the signature it names, checked for its method, into
        `response`."""
        _require_model_spec(request)
        servable = self._core.get(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(signature_name)
        if signature is None:
            raise InvalidArgumentError(f"No signature was found with the name: "
                                       f"{signature_name}")
        check_example_signature(signature, method)
        examples = serialized_examples(request.input)
        EXAMPLE_METHODS[method][1](signature, len(examples),
                                   servable.run(signature_name, {EXAMPLE_INPUTS: examples}),
                                   response.result)
        _fill_spec(response, request, servable, signature_name)
        return response

    def classify(self, request: classification_pb2.ClassificationRequest
                 ) -> classification_pb2.ClassificationResponse:
        return self._example_method(request, classification_pb2.ClassificationResponse(),
                                    CLASSIFY_METHOD)

    def regress(self, request: regression_pb2.RegressionRequest
                ) -> regression_pb2.RegressionResponse:
        return self._example_method(request, regression_pb2.RegressionResponse(),
                                    REGRESS_METHOD)

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest
                        ) -> inference_pb2.MultiInferenceResponse:
        """multi_inference.cc: several Classify/Regress signatures of one model on the
        same examples.  (TF Serving runs them as one session call; each signature here
        is its own function call on the same serialized examples: the same results.)"""
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        servable = self._core.get(first)
        tasks, seen = [], set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise InvalidArgumentError("Found ModelSpec with an empty model name.")
            if task.model_spec.name != first.name:
                raise InvalidArgumentError("All ModelSpecs in a MultiInferenceRequest must "
                                           "access the same model name.")
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name in seen:
                raise InvalidArgumentError(f"Duplicate evaluation of signature: "
                                           f"{signature_name}")
            seen.add(signature_name)
            signature = servable.signature_defs.get(signature_name)
            if signature is None:
                raise InvalidArgumentError(f"Requested signature not found in model graph: "
                                           f"{signature_name}")
            if task.method_name not in EXAMPLE_METHODS:
                raise UnimplementedError(f"Unsupported signature method_name: "
                                         f"{task.method_name}")
            check_example_signature(signature, task.method_name)
            tasks.append((task, signature_name, signature))
        examples = serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, signature_name, signature in tasks:
            _, post_process, field = EXAMPLE_METHODS[task.method_name]
            result = response.results.add()
            post_process(signature, len(examples),
                         servable.run(signature_name, {EXAMPLE_INPUTS: examples}),
                         getattr(result, field))
            result.model_spec.name = task.model_spec.name
            result.model_spec.signature_name = signature_name
            result.model_spec.version.value = servable.version
        return response

    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                           ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise InvalidArgumentError("Missing ModelSpec")
        if not request.metadata_field:
            raise InvalidArgumentError(
                "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise InvalidArgumentError(f"Metadata field {field} is not supported")
        servable = self._core.get(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        return response

    Predict = _rpc(predict, "Predict")
    Classify = _rpc(classify, "Classify")
    Regress = _rpc(regress, "Regress")
    MultiInference = _rpc(multi_inference, "MultiInference")
    GetModelMetadata = _rpc(get_model_metadata)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServerCore):
        self._core = core

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                         ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise InvalidArgumentError("Missing ModelSpec")
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=self._core.status(request.model_spec))

    def handle_reload_config_request(self, request: model_management_pb2.ReloadConfigRequest
                                     ) -> model_management_pb2.ReloadConfigResponse:
        """model_service_impl.cc: only a ModelConfigList is taken.  (The response's
        `metric` field, TF Serving's load counters, stays empty here.)"""
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgumentError(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported")
        self._core.reload_config(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()  # OK
        return response

    GetModelStatus = _rpc(get_model_status)
    HandleReloadConfigRequest = _rpc(handle_reload_config_request)
