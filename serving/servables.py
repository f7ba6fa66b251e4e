"""Loading SavedModel versions from a base path and following new ones, like TF Serving.

`tensorflow_model_server --model_base_path=B` serves the largest integer directory
under `B` (its default "latest" version policy), polls `B` every
`--file_system_poll_wait_seconds`, loads a newer version while the old one keeps
serving, then retires the old one.  Requests that already hold the old version finish
on it.  Any SavedModel works, not only ours: the server only reads its signatures.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, prediction_log_pb2

from serving.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from serving.tensors import dtype_name, to_ndarray

SERVE_TAG = "serve"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warmup records
_VERSION = re.compile(r"^\d+$")
_State = get_model_status_pb2.ModelVersionStatus.State


def list_versions(base_path: Path) -> list[int]:
    """Integer version directories holding a SavedModel, ascending."""
    if not base_path.is_dir():
        return []
    return sorted(int(p.name) for p in base_path.iterdir()
                  if _VERSION.match(p.name) and (p / "saved_model.pb").is_file())


def read_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path}: no MetaGraphDef with tag {SERVE_TAG!r}")


def op_error_message(error: tf.errors.OpError) -> str:
    """The op's own message, without the eager runtime's 'Graph execution error' preamble."""
    message = error.message
    marker = "<stack traces unavailable>\n"
    if "Graph execution error" in message and marker in message:
        message = message.split(marker, 1)[1]
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", message).strip()


class Servable:
    """One loaded version of a SavedModel and its signatures."""

    def __init__(self, name: str, version: int, path: Path):
        self.name, self.version, self.path = name, version, path
        self.signature_defs = dict(read_meta_graph(path).signature_def)
        self._loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        self._functions = dict(self._loaded.signatures)

    def signature_def(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        if signature_name not in self._functions:
            raise FailedPreconditionError(f'Serving signature key "{signature_name}" not found.')
        return self.signature_defs[signature_name]

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature on validated inputs; TensorFlow errors keep their code."""
        signature = self.signature_def(signature_name)
        feeds = {}
        for index, (alias, info) in enumerate(sorted(signature.inputs.items())):
            if alias not in inputs:
                continue
            array = inputs[alias]
            given = tf.as_dtype(array.dtype if array.dtype != object else tf.string)
            if given.as_datatype_enum != info.dtype:
                raise InvalidArgumentError(
                    f"Expects arg[{index}] to be {dtype_name(info.dtype)} but "
                    f"{dtype_name(given.as_datatype_enum)} is provided")
            expected = tf.TensorShape(info.tensor_shape)
            if not expected.is_compatible_with(array.shape):
                raise InvalidArgumentError(
                    f"input tensor alias {alias} has shape {list(array.shape)}, which is not "
                    f"compatible with the signature's {expected}")
            feeds[alias] = tf.constant(array, dtype=given)
        try:
            outputs = self._functions[signature_name](**feeds)
        except tf.errors.OpError as error:
            raise ServingError(op_error_message(error), code=_grpc_code(error.error_code)) \
                from None
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}

    def warm_up(self) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` as TF Serving does at load."""
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        count = 0
        for number, record in enumerate(
                tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS), 1):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                if log.WhichOneof("log_type") != "predict_log":
                    continue  # only Predict is served here
                request = log.predict_log.request
                self.run(request.model_spec.signature_name or "serving_default",
                         {alias: to_ndarray(proto) for alias, proto in request.inputs.items()})
            except Exception as error:  # one line naming the record, not a traceback
                message = getattr(error, "message", None) or f"{error}"
                raise ValueError(f"{path}: warmup record {number} failed: "
                                 f"{message.splitlines()[0]}") from None
            count += 1
        return count


def _grpc_code(tf_code: int) -> grpc.StatusCode:
    # TensorFlow's error codes are gRPC's status codes, number for number.
    return next((code for code in grpc.StatusCode if code.value[0] == tf_code),
                grpc.StatusCode.UNKNOWN)


def describe_request(model_spec: model_pb2.ModelSpec) -> str:
    """TF Serving's `ServableRequest::DebugString`: `Latest(name)`, `Specific(name, 3)`."""
    if model_spec.HasField("version"):
        return f"Specific({model_spec.name}, {model_spec.version.value})"
    return f"Latest({model_spec.name})"


class ServableManager:
    """Serves the latest version under a base path and follows it while running.

    As TF Serving's "latest" version policy: the largest version directory present is
    served; a newer one replaces it once loaded; when the served one is deleted (a
    rollback) the largest left is loaded again, and with none left nothing is served.
    A version that fails to load is retried `max_num_load_retries` times,
    `load_retry_interval` seconds apart, then stays END with its error.
    """

    def __init__(self, model_name: str, base_path: str | Path, poll_wait_seconds: float = 1.0,
                 log=None, *, max_num_load_retries: int = 5,
                 load_retry_interval: float = 60.0):
        self.model_name = model_name
        self.base_path = Path(base_path)
        self.poll_wait_seconds = poll_wait_seconds
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._current: Servable | None = None
        self._states: dict[int, tuple[int, str]] = {}  # version -> (state, error message)
        self._failures: dict[int, int] = {}  # version -> failed load attempts
        self._retry_at: dict[int, float] = {}  # version -> time.monotonic() of the next try
        self._warned_empty = False
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def load_latest(self) -> Servable | None:
        """One poll: loads the newest version if it is not the one serving, unloads a
        deleted one; returns what serves (None when no version is there)."""
        versions = list_versions(self.base_path)
        current = self._current
        if not versions:
            if not self._warned_empty:  # TF Serving's file_system_storage_path_source.cc
                self._log(f"No versions of servable {self.model_name} found under base path "
                          f"{self.base_path}. Did you forget to name your leaf directory as "
                          f"a number (eg. '/1/')?")
                self._warned_empty = True
            if current is not None:
                self._retire(current, "its directory was deleted")
            return None
        self._warned_empty = False
        latest = versions[-1]
        if current is not None and current.version == latest:
            return current
        if (self._failures.get(latest, 0) > self.max_num_load_retries
                or time.monotonic() < self._retry_at.get(latest, 0.0)):
            return self._keep(current, versions)  # given up on, or not yet time to retry
        self._set_state(latest, _State.LOADING)
        try:
            servable = Servable(self.model_name, latest, self.base_path / str(latest))
            warmed = servable.warm_up()
        except Exception as error:  # whatever the SavedModel's fault (a corrupt .pb: DecodeError)
            return self._failed(latest, error, current, versions)
        self._failures.pop(latest, None)
        with self._lock:
            self._current = servable
        self._set_state(latest, _State.AVAILABLE)
        self._log(f"Successfully loaded servable version {{name: {self.model_name} version: "
                  f"{latest}}} ({warmed} warmup requests)")
        if current is not None:
            # Requests holding the old Servable finish on it; it is freed after them.
            self._set_state(current.version, _State.END)
        return servable

    def _failed(self, version: int, error: Exception, current: Servable | None,
                versions: list[int]) -> Servable | None:
        attempts = self._failures[version] = self._failures.get(version, 0) + 1
        message = f"{error}".splitlines()[0] if f"{error}" else type(error).__name__
        if attempts > self.max_num_load_retries:
            self._set_state(version, _State.END, message)
            self._log(f"Loading servable version {{name: {self.model_name} version: "
                      f"{version}}} failed after {attempts} attempts: {message}")
        else:
            self._set_state(version, _State.LOADING)
            self._retry_at[version] = time.monotonic() + max(self.load_retry_interval, 0)
            self._log(f"Loading servable version {{name: {self.model_name} version: "
                      f"{version}}} failed (attempt {attempts}); retrying in "
                      f"{self.load_retry_interval:g} s: {message}")
        return self._keep(current, versions)

    def _keep(self, current: Servable | None, versions: list[int]) -> Servable | None:
        """The current version while its directory is there, else unloaded."""
        if current is not None and current.version not in versions:
            self._retire(current, "its directory was deleted")
            return None
        return current

    def _retire(self, servable: Servable, why: str) -> None:
        with self._lock:
            if self._current is servable:
                self._current = None
        self._set_state(servable.version, _State.END)
        self._log(f"Unloaded servable version {{name: {self.model_name} version: "
                  f"{servable.version}}}: {why}")

    def _set_state(self, version: int, state: int, error: str = "") -> None:
        with self._lock:
            self._states[version] = (state, error)

    def start_polling(self) -> None:
        if self.poll_wait_seconds <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.load_latest()
            except Exception as error:  # the poller must outlive one bad directory
                self._log(f"Polling {self.base_path} failed: {error}")

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()

    def get(self, model_spec: model_pb2.ModelSpec) -> Servable:
        """The servable a request's `model_spec` names, with TF Serving's errors."""
        if not model_spec.name:  # server_core.cc
            raise InvalidArgumentError("ModelSpec has no name specified.")
        label = model_spec.version_label if model_spec.WhichOneof("version_choice") \
            == "version_label" else None
        if label is not None and model_spec.name == self.model_name:
            raise InvalidArgumentError(f"Unrecognized servable version label: {label}")
        servable = self._current
        if (servable is None or model_spec.name != self.model_name
                or (model_spec.HasField("version")
                    and model_spec.version.value != servable.version)):
            raise NotFoundError(f"Servable not found for request: {describe_request(model_spec)}")
        return servable

    def status(self, model_spec: model_pb2.ModelSpec
               ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """`GetModelStatus`: every version seen, newest first, or the one asked for."""
        with self._lock:
            states = dict(self._states) if model_spec.name == self.model_name else {}
        if model_spec.HasField("version"):
            version = model_spec.version.value
            if version not in states:
                raise NotFoundError(f"Could not find version {version} of model "
                                    f"{model_spec.name}")
            states = {version: states[version]}
        elif not states:
            raise NotFoundError(f"Could not find any versions of model {model_spec.name}")
        statuses = []
        for version in sorted(states, reverse=True):
            state, error = states[version]
            status = get_model_status_pb2.ModelVersionStatus(version=version, state=state)
            status.status.SetInParent()  # TF Serving always sets it (OK, no message)
            if error:
                status.status.error_code = 2  # UNKNOWN: the load failed
                status.status.error_message = error
            statuses.append(status)
        return statuses
