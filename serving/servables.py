"""Loading SavedModel versions from a base path and following new ones, like TF Serving.

`tensorflow_model_server --model_base_path=B` serves the largest integer directory
under `B` (its default "latest" version policy; a model config file may ask for the
newest N, all, or specific versions), polls `B` every `--file_system_poll_wait_seconds`,
loads a newer version while the old one keeps serving, then retires the old one.
Requests that already hold the old version finish on it.  Any SavedModel works, not
only ours: the server only reads its signatures.  The base path may be a `tf.io.gfile`
URL (`gs://bucket/models/alexnet`), as for tensorflow_model_server.
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
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import file_system_storage_path_source_pb2

from serving.errors import (
    ConfigError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from serving.tensors import data_type, dtype_name, to_ndarray
from tfrecords_tools.base import storage

SERVE_TAG = "serve"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warmup records
_VERSION = re.compile(r"^\d+$")
_State = get_model_status_pb2.ModelVersionStatus.State
VersionPolicy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig \
    .ServableVersionPolicy


def version_numbers(base_path: storage.PathOrUrl) -> list[int]:
    """The integer version directories under `base_path`, whatever they hold, ascending
    (TF Serving's layout `<base>/<version>/`; it skips other names)."""
    if not base_path.is_dir():
        return []
    return sorted(int(p.name) for p in base_path.iterdir() if _VERSION.match(p.name))


def list_versions(base_path: storage.PathOrUrl) -> list[int]:
    """Integer version directories holding a SavedModel, ascending."""
    return [version for version in version_numbers(base_path)
            if (base_path / str(version) / "saved_model.pb").is_file()]


def read_meta_graph(path: storage.PathOrUrl) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ConfigError(f"{path}: no MetaGraphDef with tag {SERVE_TAG!r}")


def op_error_message(error: tf.errors.OpError) -> str:
    """The op's own message, without the eager runtime's 'Graph execution error' preamble."""
    message = error.message
    marker = "<stack traces unavailable>\n"
    if "Graph execution error" in message and marker in message:
        message = message.split(marker, 1)[1]
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", message).strip()


class Servable:
    """One loaded version of a SavedModel and its signatures."""

    def __init__(self, name: str, version: int, path: storage.PathOrUrl):
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
            given = data_type(array)
            if given != info.dtype:
                raise InvalidArgumentError(
                    f"Expects arg[{index}] to be {dtype_name(info.dtype)} but "
                    f"{dtype_name(given)} is provided")
            expected = tf.TensorShape(info.tensor_shape)
            if not expected.is_compatible_with(array.shape):
                raise InvalidArgumentError(
                    f"input tensor alias {alias} has shape {list(array.shape)}, which is not "
                    f"compatible with the signature's {expected}")
            feeds[alias] = tf.constant(array, dtype=tf.as_dtype(given))
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
                raise ConfigError(f"{path}: warmup record {number} failed: "
                                  f"{message.splitlines()[0]}") from error
            count += 1
        return count


def _grpc_code(tf_code: int) -> grpc.StatusCode:
    # TensorFlow's error codes are gRPC's status codes, number for number.
    return next((code for code in grpc.StatusCode if code.value[0] == tf_code),
                grpc.StatusCode.UNKNOWN)


def _load_error_code(error: Exception) -> int:
    """The gRPC code number of a failed load: a TensorFlow error keeps its own; a
    missing file (TensorFlow's loader raises FileNotFoundError for absent variables, a
    NotFound status in TF Serving) is NOT_FOUND; anything else, such as a
    saved_model.pb that does not parse, UNKNOWN."""
    if isinstance(error, tf.errors.OpError):
        return error.error_code
    if isinstance(error, FileNotFoundError):
        return grpc.StatusCode.NOT_FOUND.value[0]
    return grpc.StatusCode.UNKNOWN.value[0]


def describe_request(model_name: str, version: int | None) -> str:
    """TF Serving's `ServableRequest::DebugString`: `Latest(name)`, `Specific(name, 3)`."""
    return f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"


def aspired_versions(policy: VersionPolicy, versions: list[int]) -> list[int]:
    """The versions on disk that a version policy serves, ascending
    (sources/storage_path/file_system_storage_path_source.cc): `latest` the newest
    `num_versions` (at least one; the default policy), `all` every one, `specific` the
    listed ones that are there."""
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return list(versions)
    if kind == "specific":
        wanted = set(policy.specific.versions)
        return [version for version in versions if version in wanted]
    return versions[-max(policy.latest.num_versions, 1):]


class ServableManager:
    """The versions of one model: loads those its version policy names, unloads the rest.

    Polled (by the `ServerCore`), it follows the base path as TF Serving does: a new
    version is loaded while the old ones keep serving, and an old one is unloaded once
    a version the policy wants serves, or once its directory is deleted (a rollback:
    the newest left is loaded again; with none left nothing is served).  A version
    that fails to load is retried `max_num_load_retries` times, `load_retry_interval`
    seconds apart, then stays END with its error.
    """

    def __init__(self, model_name: str, base_path: str | Path,
                 policy: VersionPolicy | None = None, log=None, *,
                 max_num_load_retries: int = 5, load_retry_interval: float = 60.0):
        self.model_name = model_name
        self.base_path = storage.path(base_path)
        self.policy = policy or VersionPolicy()
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._lock = threading.Lock()  # guards _serving and _states for readers
        self._poll_lock = threading.Lock()  # one poll at a time
        self._serving: dict[int, Servable] = {}
        # version -> (state, the load error's message and gRPC code number)
        self._states: dict[int, tuple[int, str, int]] = {}
        self._failures: dict[int, int] = {}  # version -> failed load attempts
        self._retry_at: dict[int, float] = {}  # version -> time.monotonic() of the next try
        self._warned_empty = False

    def configure(self, base_path: str | Path, policy: VersionPolicy) -> None:
        """A new base path or policy (a config reload); applied by the next `poll`."""
        with self._poll_lock:
            self.base_path, self.policy = storage.path(base_path), policy

    def aspired(self) -> list[int]:
        """The versions on disk that the policy serves, ascending."""
        return aspired_versions(self.policy, list_versions(self.base_path))

    def poll(self) -> None:
        """One look at the base path: loads the aspired versions not serving yet
        (newest first), then unloads what the policy no longer wants."""
        with self._poll_lock:
            on_disk = list_versions(self.base_path)
            aspired = aspired_versions(self.policy, on_disk)
            if not aspired and not self._warned_empty:  # file_system_storage_path_source.cc
                self._log(f"No versions of servable {self.model_name} found under base path "
                          f"{self.base_path}. Did you forget to name your leaf directory as "
                          f"a number (eg. '/1/')?")
            self._warned_empty = not aspired
            for version in reversed(aspired):
                if version not in self._serving:
                    self._load(version)
            serving_aspired = any(version in self._serving for version in aspired)
            for version in sorted(self._serving):
                if version in aspired:
                    continue
                if version not in on_disk:
                    self._retire(version, "its directory was deleted")
                elif serving_aspired or not aspired:
                    self._retire(version, "the version policy no longer serves it")

    def unload_all(self, why: str) -> None:
        with self._poll_lock:
            for version in sorted(self._serving):
                self._retire(version, why)

    def _load(self, version: int) -> None:
        if (self._failures.get(version, 0) > self.max_num_load_retries
                or time.monotonic() < self._retry_at.get(version, 0.0)):
            return  # given up on, or not yet time to retry
        self._set_state(version, _State.LOADING)
        try:
            servable = Servable(self.model_name, version, self.base_path / str(version))
            warmed = servable.warm_up()
        except Exception as error:  # whatever the SavedModel's fault (a corrupt .pb: DecodeError)
            self._failed(version, error)
            return
        self._failures.pop(version, None)
        with self._lock:
            self._serving[version] = servable
            self._states[version] = (_State.AVAILABLE, "", 0)
        self._log(f"Successfully loaded servable version {{name: {self.model_name} version: "
                  f"{version}}} ({warmed} warmup requests)")

    def _failed(self, version: int, error: Exception) -> None:
        attempts = self._failures[version] = self._failures.get(version, 0) + 1
        message = f"{error}".splitlines()[0] if f"{error}" else type(error).__name__
        if attempts > self.max_num_load_retries:
            self._set_state(version, _State.END, message, _load_error_code(error))
            self._log(f"Loading servable version {{name: {self.model_name} version: "
                      f"{version}}} failed after {attempts} attempts: {message}")
        else:
            self._set_state(version, _State.LOADING)
            self._retry_at[version] = time.monotonic() + max(self.load_retry_interval, 0)
            self._log(f"Loading servable version {{name: {self.model_name} version: "
                      f"{version}}} failed (attempt {attempts}); retrying in "
                      f"{self.load_retry_interval:g} s: {message}")

    def _retire(self, version: int, why: str) -> None:
        # Requests holding the Servable finish on it; it is freed after them.
        with self._lock:
            self._serving.pop(version, None)
            self._states[version] = (_State.END, "", 0)
        self._log(f"Unloaded servable version {{name: {self.model_name} version: "
                  f"{version}}}: {why}")

    def _set_state(self, version: int, state: int, error: str = "", code: int = 0) -> None:
        with self._lock:
            self._states[version] = (state, error, code)

    def servable(self, version: int | None = None) -> Servable | None:
        """The newest version serving, or the one asked for; None when it does not serve."""
        with self._lock:
            if version is None:
                return self._serving[max(self._serving)] if self._serving else None
            return self._serving.get(version)

    def load_error(self, version: int) -> str:
        """Why a version is not serving, if it failed to load ("" otherwise)."""
        with self._lock:
            return self._states.get(version, (0, "", 0))[1]

    def status(self, version: int | None = None
               ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """`GetModelStatus`: every version seen, newest first, or the one asked for."""
        with self._lock:
            states = dict(self._states)
        return version_statuses(self.model_name, states, version)


def version_statuses(model_name: str, states: dict[int, tuple[int, str, int]],
                     version: int | None = None
                     ) -> list[get_model_status_pb2.ModelVersionStatus]:
    """get_model_status_impl.cc: the versions' states (version -> (state, load error,
    its code)),
    newest first, or the one asked for; NOT_FOUND with TF Serving's message."""
    if version is not None:
        if version not in states:
            raise NotFoundError(f"Could not find version {version} of model {model_name}")
        states = {version: states[version]}
    elif not states:
        raise NotFoundError(f"Could not find any versions of model {model_name}")
    statuses = []
    for number in sorted(states, reverse=True):
        state, error, code = states[number]
        status = get_model_status_pb2.ModelVersionStatus(version=number, state=state)
        status.status.SetInParent()  # TF Serving always sets it (OK, no message)
        if error:
            status.status.error_code = code
            status.status.error_message = error
        statuses.append(status)
    return statuses
