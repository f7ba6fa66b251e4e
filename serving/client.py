"""A client for TensorFlow Serving's gRPC API: `tensorflow_model_server` or `serving serve`.

It speaks only the public protocol (tensorflow-serving-api's stubs and messages), so it
works unchanged against either server.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import InvalidArgumentError, UnimplementedError, error_for
from serving.options import ClientOptions
from serving.tensors import to_ndarray, to_tensor_proto

# tensorflow_model_server accepts messages up to INT_MAX; grpc's Python default is 4 MB.
MAX_MESSAGE_BYTES = 2**31 - 1
MAX_BACKOFF_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A `PredictResponse` decoded: outputs as arrays, and the model_spec the server used."""

    outputs: dict[str, np.ndarray]
    model_name: str
    version: int
    signature_name: str


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # AVAILABLE, LOADING, END, ...
    error_message: str = ""


def _read(value: bytes | str | os.PathLike | None) -> bytes | None:
    """PEM given as bytes, or as the path of a file holding it."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def request_batches(images: Sequence[bytes], max_request_bytes: int,
                    max_batch: int) -> Iterator[range]:
    """Index ranges of consecutive images whose encoded sizes fit in one request."""
    start, size = 0, 0
    for index, image in enumerate(images):
        if index > start and (size + len(image) > max_request_bytes
                              or index - start >= max_batch):
            yield range(start, index)
            start, size = index, 0
        size += len(image) + 16  # per-string protobuf framing, generously
    if start < len(images):
        yield range(start, len(images))


def format_top5(name: str, top5: Sequence[tuple[str, float]]) -> str:
    """One image's classes as the `query` and `predict` commands print them."""
    lines = [name] + [f"  {rank}. {probability:7.4f}  {label}"
                      for rank, (label, probability) in enumerate(top5, 1)]
    return "\n".join(lines)


class Client:
    """One long-lived channel to a model server; every call has a deadline.

    Takes `options=ClientOptions(...)`, or `target`, `model_name` and the other fields
    of `serving.options.ClientOptions` as keywords: `Client("host:8500", "alexnet",
    timeout=5)`.  Errors raise `serving.errors.ServingError` subclasses carrying the
    server's message.
    """

    def __init__(self, target: str | None = None, model_name: str | None = None, *,
                 options: ClientOptions | None = None, **fields):
        given = {name: value for name, value in (("target", target),
                                                 ("model_name", model_name)) if value is not None}
        if options is None:
            options = ClientOptions(**given, **fields)
        elif given or fields:
            raise TypeError("Client takes options or their fields, not both")
        self.options = options
        channel_options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if options.ssl_target_name_override:
            channel_options.append(("grpc.ssl_target_name_override",
                                    options.ssl_target_name_override))
        if (options.tls or options.root_certificates is not None
                or options.private_key is not None):
            credentials = grpc.ssl_channel_credentials(
                _read(options.root_certificates), _read(options.private_key),
                _read(options.certificate_chain))
            self._channel = grpc.secure_channel(options.target, credentials,
                                                channel_options)
        else:
            self._channel = grpc.insecure_channel(options.target, channel_options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def model_spec(self, signature_name: str | None = None, version: int | None = None,
                   version_label: str | None = None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.options.model_name,
                                   signature_name=signature_name or self.options.signature_name)
        if version is None and version_label is None:
            version, version_label = self.options.version, self.options.version_label
        if version is not None:
            spec.version.value = version
        elif version_label is not None:
            spec.version_label = version_label
        return spec

    def _call(self, method, request, timeout: float | None):
        """One RPC with a deadline, retried with backoff on UNAVAILABLE only."""
        for attempt in range(self.options.retries + 1):
            try:
                return method(request, timeout=timeout or self.options.timeout)
            except grpc.RpcError as error:
                code = error.code()
                if code != grpc.StatusCode.UNAVAILABLE or attempt == self.options.retries:
                    raise error_for(code, error.details() or "") from error
            delay = min(self.options.backoff_seconds * 2 ** attempt, MAX_BACKOFF_SECONDS)
            time.sleep(delay * random.uniform(0.5, 1.5))  # jitter spreads retrying clients
        raise AssertionError("unreachable")

    def predict(self, inputs: Mapping[str, object], *, output_filter: Iterable[str] = (),
                signature_name: str | None = None, version: int | None = None,
                version_label: str | None = None, timeout: float | None = None) -> Prediction:
        """`Predict` with array-likes (or `TensorProto`s) as inputs."""
        request = predict_pb2.PredictRequest(
            model_spec=self.model_spec(signature_name, version, version_label),
            output_filter=list(output_filter))
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(
                value if isinstance(value, tensor_pb2.TensorProto) else to_tensor_proto(value))
        response = self._call(self._predictions.Predict, request, timeout)
        return Prediction({alias: to_ndarray(proto) for alias, proto in response.outputs.items()},
                          response.model_spec.name, response.model_spec.version.value,
                          response.model_spec.signature_name)

    def classify(self, images: Sequence[bytes], *, version: int | None = None,
                 version_label: str | None = None, timeout: float | None = None
                 ) -> list[list[tuple[str, float]]]:
        """Encoded JPEG/PNG images -> per image the top-5 (class name, probability).

        Many images are sent in several requests, each below `max_request_bytes`.
        """
        if not all(isinstance(image, bytes) for image in images):
            raise InvalidArgumentError("classify takes encoded image bytes (JPEG or PNG)")
        results: list[list[tuple[str, float]]] = []
        for batch in request_batches(images, self.options.max_request_bytes,
                                     self.options.max_batch):
            try:
                results.extend(self._top5([images[i] for i in batch], version, version_label,
                                          timeout))
            except InvalidArgumentError as error:
                # A request fails as a whole: find the image that failed, and name it.
                for index in batch:
                    try:
                        self._top5([images[index]], version, version_label, timeout)
                    except InvalidArgumentError as single:
                        failure = InvalidArgumentError(
                            f"image {index} of {len(images)}: {single.message}")
                        failure.index = index  # for a caller that knows the images' names
                        raise failure from error
                raise error
        return results

    def _top5(self, images: list[bytes], version, version_label, timeout
              ) -> list[list[tuple[str, float]]]:
        prediction = self.predict(
            {"image_bytes": np.array(images, dtype=object)},
            output_filter=("top_k_labels", "top_k_scores"), version=version,
            version_label=version_label, timeout=timeout)
        labels, scores = prediction.outputs["top_k_labels"], prediction.outputs["top_k_scores"]
        return [[(label.decode(), float(score)) for label, score in zip(row_l, row_s,
                                                                        strict=True)]
                for row_l, row_s in zip(labels, scores, strict=True)]

    def metadata(self, *, version: int | None = None, timeout: float | None = None
                 ) -> dict[str, meta_graph_pb2.SignatureDef]:
        """`GetModelMetadata`: the model's signatures by name."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.model_spec(version=version), metadata_field=["signature_def"])
        response = self._call(self._predictions.GetModelMetadata, request, timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return dict(signatures.signature_def)

    def status(self, *, version: int | None = None, timeout: float | None = None
               ) -> list[VersionStatus]:
        """`GetModelStatus`: each version's state, newest first."""
        spec = model_pb2.ModelSpec(name=self.options.model_name)
        if version is not None:
            spec.version.value = version
        response = self._call(self._models.GetModelStatus,
                              get_model_status_pb2.GetModelStatusRequest(model_spec=spec), timeout)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [VersionStatus(s.version, state_name(s.state), s.status.error_message)
                for s in response.model_version_status]

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """`grpc.health.v1` status of a service: SERVING, NOT_SERVING, ...

        Stock tensorflow_model_server has no health service unless started with
        `--enable_grpc_healthcheck_service`; then the answer comes from GetModelStatus:
        SERVING when a version of this client's model is AVAILABLE.
        """
        try:
            response = self._call(self._health.Check,
                                  health_pb2.HealthCheckRequest(service=service), timeout)
        except UnimplementedError:
            available = any(v.state == "AVAILABLE" for v in self.status(timeout=timeout))
            return "SERVING" if available else "NOT_SERVING"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
