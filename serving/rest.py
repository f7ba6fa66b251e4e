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
server is the standard library's threading HTTP server, framing requests as TF
Serving's libevent does (chunked and gzipped bodies read, a bad Content-Length a 400,
paths outside /v1/ a 404, PUT/DELETE/HEAD on the API "Malformed request"), every
answer JSON, its own refusals included; a client's bad request is logged nowhere.
"""

from __future__ import annotations

import base64
import http
import http.server
import json
import re
import socket
import sys
import threading
import traceback
import urllib.parse
import zlib

import grpc
import numpy as np
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import json_tensor
from serving.client import MAX_MESSAGE_BYTES
from serving.errors import FailedPreconditionError, InvalidArgumentError, ServingError
from serving.monitoring import DEFAULT_PATH, Metrics
from serving.options import ServerOptions
from serving.server_core import ServerCore
from serving.service import DEFAULT_SIGNATURE, ModelServicer, PredictionServicer
from serving.tensors import to_ndarray, to_tensor_proto

# http_rest_api_util.cc's kPredictionApiGegex and kModelStatusApiRegex.
_POST = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                   r":(classify|regress|predict)")
_GET = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|"
                  r"(?:/labels/([^/:]+)))?(?:/(metadata))?")
# http_rest_api_util.h's kHTTPRestApiHandlerPathRegex: what http_server.cc dispatches.
_API_PATH = re.compile(r"(?i)/v1/.*")
_LENGTH = re.compile(r"[ \t]*\+?[0-9]+[ \t]*")  # what libevent's strtoll takes whole
MAX_VERSION = 2**63 - 1
JSON = "application/json"
#: The largest request body read, as gRPC's message limit; and its unit of reading.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES
READ_PIECE_BYTES = 1 << 20
MAX_LINE_BYTES = 65536  # a chunk-size line, as http.server's request and header lines
#: zlib's kMaxUncompressedBytes (net_http/compression/gzip_zlib.h).
MAX_GUNZIPPED_BYTES = 100 << 20
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
        if int(version) > MAX_VERSION:  # absl::SimpleAtoi into an int64
            raise InvalidArgumentError(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    if label:
        spec.version_label = urllib.parse.unquote(label)
    return spec


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


class RestApi:
    """Answers one REST request with the gRPC servicers' own logic and errors."""

    def __init__(self, core: ServerCore, predictions: PredictionServicer,
                 models: ModelServicer, metrics: Metrics | None = None,
                 metrics_path: str = DEFAULT_PATH):
        self.core, self.predictions, self.models = core, predictions, models
        self.metrics, self.metrics_path = metrics, metrics_path

    def handle(self, method: str, path: str, body: bytes, origin: str = ""
               ) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for a request, whatever it holds: a
        client's mistake is a 4xx with TF Serving's message, logged nowhere (TF Serving
        logs them at VLOG(1), off by default); only the server's own fault is a 500,
        logged with its traceback."""
        path = urllib.parse.urlsplit(path).path
        if self.metrics is not None and method == "GET" and path == self.metrics_path:
            return 200, self.metrics.exposition(), CONTENT_TYPE_LATEST
        if not _API_PATH.fullmatch(path):  # http_server.cc dispatches only /v1/ paths
            return 404, _error_json(f"Not Found: {method} {path}"), JSON
        try:
            if method == "OPTIONS":  # http_server.cc: a CORS preflight
                if not re.search(r"https?://", origin):
                    raise FailedPreconditionError("Origin header is missing in CORS "
                                                  "preflight")
                document = {}
            else:
                document = self._dispatch(method, path, body)
            status = 200
        except ServingError as error:
            status, document = HTTP_STATUS.get(error.code, 500), {"error": error.message}
        except Exception:  # a bug of this server's, not the client's
            traceback.print_exc()
            status, document = 500, {"error": f"Internal error answering {method} {path}; "
                                              f"the server's log has the traceback"}
        return status, json.dumps(document, indent=1).encode(), JSON

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
        spec = _model_spec(name, version, label)
        document = json_tensor.parse_json(body)
        spec.signature_name = json_tensor.signature_name(document)
        if verb == "predict":
            return self._predict(spec, document)
        if verb == "classify":
            request = classification_pb2.ClassificationRequest(model_spec=spec)
            json_tensor.fill_examples(document, request.input)
            response = self.predictions.classify(request)
            return {"results": [[[c.label, c.score] for c in row.classes]
                                for row in response.result.classifications]}
        request = regression_pb2.RegressionRequest(model_spec=spec)
        json_tensor.fill_examples(document, request.input)
        response = self.predictions.regress(request)
        return {"results": [r.value for r in response.result.regressions]}

    def _predict(self, spec: model_pb2.ModelSpec, document: dict) -> dict:
        servable = self.core.get(spec)
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        if signature_name not in servable.signature_defs:
            raise InvalidArgumentError(f'Serving signature name: "{signature_name}" not '
                                       f'found in signature def')
        inputs, form = json_tensor.predict_inputs(
            document, servable.signature_defs[signature_name].inputs)
        request = predict_pb2.PredictRequest(model_spec=spec)
        for alias, array in inputs.items():
            request.inputs[alias].CopyFrom(to_tensor_proto(array))
        response = self.predictions.predict(request)
        return _predict_output({alias: to_ndarray(t) for alias, t in response.outputs.items()},
                               form)


def _error_json(message: str) -> bytes:
    return json.dumps({"error": message}, indent=1).encode()


def _message(message, field_names: bool) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=field_names,
                                     always_print_fields_with_no_presence=True)


class _BadBody(Exception):
    """A request body that cannot be read as its headers describe: (status, message)."""


def _read_exactly(rfile, length: int) -> bytes:
    """`length` bytes, read in pieces: memory grows with the bytes that arrive, not with
    what a header claims."""
    pieces = []
    while length > 0:
        piece = rfile.read(min(length, READ_PIECE_BYTES))
        if not piece:
            raise ConnectionAbortedError("the client closed the connection mid-body")
        pieces.append(piece)
        length -= len(piece)
    return b"".join(pieces)


def _read_chunked(rfile) -> bytes:
    """A `Transfer-Encoding: chunked` body (libevent reads one, so TF Serving takes it)."""
    pieces, total = [], 0
    while True:
        line = rfile.readline(MAX_LINE_BYTES + 1)
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise _BadBody(400, f"Bad chunk size line: {line[:80]!r}") from None
        if size < 0:
            raise _BadBody(400, f"Bad chunk size line: {line[:80]!r}")
        total += size
        if total > MAX_BODY_BYTES:
            raise _BadBody(413, f"Request body is over the limit of {MAX_BODY_BYTES} bytes")
        if size == 0:
            while rfile.readline(MAX_LINE_BYTES + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields, ignored
            return b"".join(pieces)
        pieces.append(_read_exactly(rfile, size))
        if rfile.readline(MAX_LINE_BYTES + 1) not in (b"\r\n", b"\n"):
            raise _BadBody(400, "Chunk data is not followed by CRLF")


def _gunzip(body: bytes) -> bytes:
    """evhttp_request.cc's gzip request bodies, up to zlib's kMaxUncompressedBytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, MAX_GUNZIPPED_BYTES + 1)
    except zlib.error:
        data = None
    if data is None or len(data) > MAX_GUNZIPPED_BYTES or not inflater.eof:
        raise _BadBody(400, f"Failed to uncompress the gzipped body (at most "
                            f"{MAX_GUNZIPPED_BYTES} bytes once uncompressed)")
    return data


def read_body(rfile, headers) -> bytes:
    """The request body as libevent frames it: chunked, else Content-Length bytes (none
    without one), gunzipped under `Content-Encoding: gzip`.  Raises `_BadBody`."""
    if headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
        body = _read_chunked(rfile)
    else:
        length = headers.get("Content-Length")
        if length is not None and not _LENGTH.fullmatch(length):
            raise _BadBody(400, f"Bad Content-Length: {length}")
        if length is not None and int(length) > MAX_BODY_BYTES:
            raise _BadBody(413, f"Content-Length {int(length)} is over the limit of "
                                f"{MAX_BODY_BYTES} bytes")
        body = _read_exactly(rfile, int(length)) if length else b""
    if "gzip" in headers.get("Content-Encoding", "") and body:
        body = _gunzip(body)
    return body


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection: every request answered with JSON, the connection closed after a
    body that cannot be framed."""

    protocol_version = "HTTP/1.1"
    # Answers to unparsable request lines get a status line too (HTTP/0.9 has none).
    default_request_version = "HTTP/1.1"
    api: RestApi  # set by RestServer

    def _reply(self, status: int, payload: bytes, content_type: str = JSON) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """The standard library's own refusals (a bad request line, 414, 431, an unknown
        method) as JSON too."""
        self.close_connection = True
        self._reply(code, _error_json(message or http.HTTPStatus(code).phrase))

    def _answer(self) -> None:
        try:
            body = read_body(self.rfile, self.headers)
        except _BadBody as error:
            self.close_connection = True  # where this body ends is unknown
            status, message = error.args
            self._reply(status, _error_json(message))
            return
        self._reply(*self.api.handle(self.command, self.path, body,
                                     self.headers.get("Origin", "")))

    # libevent's allowed methods (evhttp_server.cc); others get 501, as there.
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _answer

    def log_message(self, format, *args):  # TF Serving logs no access or error lines
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # socketserver's 5 drops bursts of connects

    def handle_error(self, request, client_address) -> None:
        """A client that went away or stalled past the timeout is no server fault; any
        other escape is, and logged once with its traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RestServer:
    """The REST API on `host:port`, on the standard library's threading HTTP server."""

    def __init__(self, api: RestApi, host: str, port: int,
                 timeout_ms: int = ServerOptions.rest_api_timeout_in_ms):
        handler = type("Handler", (_Handler,), {"api": api, "timeout": timeout_ms / 1000})
        try:
            self._server = _HTTPServer((host, port), handler)
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port} (REST API): {error}") from None
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest",
                                        daemon=True)

    def start(self) -> RestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
