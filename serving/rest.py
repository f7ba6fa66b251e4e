"""TensorFlow Serving's REST API (`--rest_api_port`) over the same servicers as gRPC.

Paths, JSON formats, error bodies and HTTP status codes as in TF Serving's
`model_servers/http_rest_api_handler.cc`, `http_rest_api_util.cc`, `http_server.cc`
and `util/json_tensor.cc`:

    GET  /v1/models/NAME[/versions/V | /labels/L]            model status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata   signature defs
    POST /v1/models/NAME[/versions/V | /labels/L]:predict    {"instances": ...} or {"inputs": ...}
    POST /v1/models/NAME[/versions/V | /labels/L]:classify   {"examples": [...], "context": ...}
    POST /v1/models/NAME[/versions/V | /labels/L]:regress

Binary values travel as {"b64": "..."}; outputs whose alias ends in `_bytes` are sent
so, other strings as UTF-8 text.  Errors are {"error": "<TF Serving's message>"}.  The
server is the standard library's threading HTTP server.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving.errors import InvalidArgumentError, ServingError
from serving.monitoring import DEFAULT_PATH, Metrics
from serving.server_core import ServerCore
from serving.service import DEFAULT_SIGNATURE, ModelServicer, PredictionServicer
from serving.tensors import to_ndarray, to_tensor_proto

# http_rest_api_util.cc's kPredictionApiGegex and kModelStatusApiRegex.
_POST = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                   r":(classify|regress|predict)")
_GET = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|"
                  r"(?:/labels/([^/:]+)))?(?:/(metadata))?")
# http_server.cc's ToHTTPStatusCode.
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401}


def _model_spec(name: str, version: str | None, label: str | None,
                signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name),
                               signature_name=signature_name)
    if version and label:
        raise InvalidArgumentError(f"Both model version ({version}) and model version label "
                                   f"({label}) cannot be supplied.")
    if version:
        spec.version.value = int(version)
    if label:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def _json_body(body: bytes) -> dict:
    if not body.strip():
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise InvalidArgumentError(f"JSON Parse error: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"JSON Value: {json.dumps(document)} Is not object")
    return document


def _decode_value(value, dtype: int):
    """A JSON value of a tensor as nested lists of Python values, {"b64": ...} decoded."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InvalidArgumentError(f"JSON Value: {json.dumps(value)} Expecting a JSON "
                                       f"object with a single 'b64' key")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise InvalidArgumentError("Unable to base64 decode") from None
    if isinstance(value, list):
        return [_decode_value(v, dtype) for v in value]
    if dtype == types_pb2.DT_STRING and isinstance(value, str):
        return value.encode()
    return value


def _array(value, info) -> np.ndarray:
    decoded = _decode_value(value, info.dtype)
    if info.dtype == types_pb2.DT_STRING:
        return np.array(decoded, dtype=object)
    try:
        return np.array(decoded, dtype=tf.as_dtype(info.dtype).as_numpy_dtype)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"JSON Value: {json.dumps(value)} is not of the "
                                   f"signature's type ({error})") from None


def _predict_inputs(document: dict, inputs) -> tuple[dict[str, np.ndarray], str]:
    """The request's tensors by alias, and its format ("row" or "columnar")."""
    if "instances" in document and "inputs" not in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidArgumentError(f"JSON Value: {json.dumps(document)} Expecting "
                                       f"'instances' to be an list/array")
        if not instances:
            raise InvalidArgumentError(f"JSON Value: {json.dumps(document)} No values in "
                                       f"'instances' array")
        if len(inputs) == 1 and not (isinstance(instances[0], dict)
                                     and set(instances[0]) != {"b64"}):
            (alias, info), = inputs.items()
            return {alias: _array(instances, info)}, "row"
        columns = {}
        for number, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InvalidArgumentError(f"Expecting object but got list at item "
                                           f"{number} of input list")
            for alias in inputs:
                if alias not in instance:
                    raise InvalidArgumentError(f"Failed to process element: {number} key: "
                                               f"{alias} of 'instances' list. Error: "
                                               f"Invalid argument: JSON object: does not "
                                               f"have named input: {alias}")
                columns.setdefault(alias, []).append(instance[alias])
        return {alias: _array(column, inputs[alias]) for alias, column in columns.items()}, \
            "row"
    if "inputs" in document and "instances" not in document:
        values = document["inputs"]
        if isinstance(values, dict) and set(values) != {"b64"}:
            missing = [alias for alias in inputs if alias not in values]
            if missing:
                raise InvalidArgumentError(f"Missing named input: {missing[0]} in 'inputs' "
                                           f"object.")
            return {alias: _array(values[alias], inputs[alias]) for alias in inputs}, \
                "columnar"
        if len(inputs) != 1:
            raise InvalidArgumentError(f"JSON Value: {json.dumps(values)} Expecting object "
                                       f"with named inputs")
        (alias, info), = inputs.items()
        return {alias: _array(values, info)}, "columnar"
    if "inputs" in document:
        raise InvalidArgumentError(f"JSON Value: {json.dumps(document)} Not formatted "
                                   f"correctly expecting only one of 'inputs' or "
                                   f"'instances' keys exists")
    raise InvalidArgumentError("Missing 'inputs' or 'instances' key")


def _jsonable(array: np.ndarray, alias: str):
    if array.dtype == object:
        if alias.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()},
                                otypes=[object])(array).tolist()
        return np.vectorize(lambda b: b.decode(errors="replace"), otypes=[object])(
            array).tolist()
    return array.tolist()


def _predict_output(outputs: dict[str, np.ndarray], form: str) -> dict:
    if form == "columnar":
        if len(outputs) == 1:
            (alias, array), = outputs.items()
            return {"outputs": _jsonable(array, alias)}
        return {"outputs": {alias: _jsonable(a, alias) for alias, a in outputs.items()}}
    if len({len(a) for a in outputs.values()}) > 1:
        raise InvalidArgumentError("Tensors must have the same batch size (0th dimension) "
                                   "to be returned in the row format")
    columns = {alias: _jsonable(array, alias) for alias, array in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{alias: column[row] for alias, column in columns.items()}
                            for row in range(rows)]}


def _feature(value) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, int) for v in values):  # bool is an int too
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=values))
    if all(isinstance(v, (int, float)) for v in values):
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(
        value=[_decode_value(v, types_pb2.DT_STRING) for v in values]))


def _example(value, where: str) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"Example must be JSON object but got JSON "
                                   f"{type(value).__name__} ({where})")
    return example_pb2.Example(features=feature_pb2.Features(
        feature={key: _feature(v) for key, v in value.items()}))


def _fill_examples(document: dict, target, verb: str) -> None:
    examples = document.get("examples")
    if not isinstance(examples, list):
        raise InvalidArgumentError(f"JSON Value: {json.dumps(document)} When method is "
                                   f"{verb}, key 'examples' is expected and was not found")
    parsed = [_example(e, f"item {i} of 'examples'") for i, e in enumerate(examples)]
    if "context" in document:
        target.example_list_with_context.context.CopyFrom(
            _example(document["context"], "'context'"))
        target.example_list_with_context.examples.extend(parsed)
    else:
        target.example_list.examples.extend(parsed)


class RestApi:
    """Answers one REST request with the gRPC servicers' own logic and errors."""

    def __init__(self, core: ServerCore, predictions: PredictionServicer,
                 models: ModelServicer, metrics: Metrics | None = None,
                 metrics_path: str = DEFAULT_PATH):
        self.core, self.predictions, self.models = core, predictions, models
        self.metrics, self.metrics_path = metrics, metrics_path

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for a request."""
        path = urllib.parse.urlsplit(path).path
        if self.metrics is not None and method == "GET" and path == self.metrics_path:
            return 200, self.metrics.exposition(), CONTENT_TYPE_LATEST
        try:
            document = self._dispatch(method, path, body)
            status = 200
        except ServingError as error:
            status, document = HTTP_STATUS.get(error.code, 500), {"error": error.message}
        return status, json.dumps(document, indent=1).encode(), "application/json"

    def _dispatch(self, method: str, path: str, body: bytes) -> dict:
        malformed = InvalidArgumentError(f"Malformed request: {method} {path}")
        if method == "POST" and (match := _POST.fullmatch(path)):
            name, version, label, verb = match.groups()
            if self.metrics is not None:  # http_server.cc records REST calls per method
                return self.metrics.timed(urllib.parse.unquote(name), verb, "REST",
                                          lambda: self._post(name, version, label, verb,
                                                             body))
            return self._post(name, version, label, verb, body)
        if method == "GET" and (match := _GET.fullmatch(path)):
            name, version, label, subresource = match.groups()
            if not name:
                raise InvalidArgumentError("Missing model name in request.")
            spec = _model_spec(name, version, label)
            if subresource == "metadata":
                response = self.predictions.get_model_metadata(
                    get_model_metadata_pb2.GetModelMetadataRequest(
                        model_spec=spec, metadata_field=["signature_def"]))
                signatures = get_model_metadata_pb2.SignatureDefMap()
                response.metadata["signature_def"].Unpack(signatures)
                return {"model_spec": _message(response.model_spec, True),
                        "metadata": {"signature_def": _message(signatures, True)}}
            response = self.models.get_model_status(
                get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
            return _message(response, False)
        raise malformed

    def _post(self, name: str, version: str | None, label: str | None, verb: str,
              body: bytes) -> dict:
        document = _json_body(body)
        spec = _model_spec(name, version, label, document.get("signature_name", ""))
        if verb == "predict":
            return self._predict(spec, document)
        if verb == "classify":
            request = classification_pb2.ClassificationRequest(model_spec=spec)
            _fill_examples(document, request.input, verb)
            response = self.predictions.classify(request)
            return {"results": [[[c.label, c.score] for c in row.classes]
                                for row in response.result.classifications]}
        request = regression_pb2.RegressionRequest(model_spec=spec)
        _fill_examples(document, request.input, verb)
        response = self.predictions.regress(request)
        return {"results": [r.value for r in response.result.regressions]}

    def _predict(self, spec: model_pb2.ModelSpec, document: dict) -> dict:
        servable = self.core.get(spec)
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        if signature_name not in servable.signature_defs:
            raise InvalidArgumentError(f'Serving signature name: "{signature_name}" not '
                                       f'found in signature def')
        inputs, form = _predict_inputs(document, servable.signature_defs[signature_name].inputs)
        request = predict_pb2.PredictRequest(model_spec=spec)
        for alias, array in inputs.items():
            request.inputs[alias].CopyFrom(to_tensor_proto(array))
        response = self.predictions.predict(request)
        return _predict_output({alias: to_ndarray(t) for alias, t in response.outputs.items()},
                               form)


def _message(message, field_names: bool) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=field_names,
                                     always_print_fields_with_no_presence=True)


class RestServer:
    """The REST API on `host:port`, on the standard library's threading HTTP server."""

    def __init__(self, api: RestApi, host: str, port: int, timeout_ms: int = 30_000):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = timeout_ms / 1000

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, content_type = api.handle(method, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, format, *args):  # TF Serving logs no access lines
                pass

        try:
            self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port} (REST API): {error}") from None
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest",
                                        daemon=True)

    def start(self) -> RestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
