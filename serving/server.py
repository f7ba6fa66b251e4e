"""A local model server speaking TensorFlow Serving's gRPC and REST APIs.

`ModelServer` runs in the calling process (its gRPC threads are background threads);
`ServerProcess` runs `python -m serving serve` as a child process and reports the port
it bound, for tests and demos that need a real separate server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import deque
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import DEFAULT_MODEL_NAME
from serving.batching import BatchingOptions, BatchScheduler
from serving.client import MAX_MESSAGE_BYTES
from serving.config_files import MonitoringConfig, SSLConfig, read_text_proto
from serving.errors import ConfigError, ServingError
from serving.monitoring import DEFAULT_PATH, Metrics
from serving.options import ServerOptions
from serving.rest import RestApi, RestServer
from serving.server_core import ServerCore, read_model_config, single_model_config
from serving.service import ModelServicer, PredictionServicer

HEALTH_SERVICES = ("", "PredictionService", "ModelService",
                   "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
READY_LINE = "Running gRPC ModelServer at {address} ..."
REST_LINE = "Exporting HTTP/REST API at:{address} ..."
_READY = re.compile(r"^Running gRPC ModelServer at (\S+):(\d+) \.\.\.$")


def server_credentials(ssl_config_file: str | os.PathLike) -> grpc.ServerCredentials:
    """TLS credentials from a `tensorflow.serving.SSLConfig` text file."""
    config = read_text_proto(ssl_config_file, SSLConfig)
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"{ssl_config_file}: server_key and server_cert are required")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"{ssl_config_file}: client_verify needs custom_ca to verify against")
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify)


class ModelServer:
    """Serves the SavedModel versions under `model_base_path` as `model_name`, or the
    models of `model_config_file` (a ModelServerConfig text proto; then the other two
    are ignored, as tensorflow_model_server does).

    Takes `options=ServerOptions(...)`, or the same fields as keywords
    (`ModelServer(path, "alexnet", port=0)`): tensorflow_model_server's flags.
    `port=0` picks a free port (read `port` after `start()`); `host` defaults to
    loopback, where TF Serving binds every interface.
    """

    def __init__(self, model_base_path: str | os.PathLike | None = None,
                 model_name: str = DEFAULT_MODEL_NAME, *, options: ServerOptions | None = None,
                 **fields):
        if options is None:
            options = ServerOptions(model_base_path=model_base_path, model_name=model_name,
                                    **fields)
        elif model_base_path is not None or fields:
            raise TypeError("ModelServer takes options or their fields, not both")
        if problem := options.usage_error():
            raise ConfigError(problem)
        self.options = options
        self._config = (read_model_config(options.model_config_file)
                        if options.model_config_file
                        else single_model_config(options.model_name, options.model_base_path))
        self.host = options.host
        self.port = options.port
        self._credentials = (server_credentials(options.ssl_config_file)
                             if options.ssl_config_file else None)
        batching = (BatchingOptions.from_file(options.batching_parameters_file)
                    if options.batching_parameters_file else BatchingOptions())
        self._batching = batching if options.enable_batching else None
        self._max_threads = options.grpc_max_threads or max(32, 4 * (os.cpu_count() or 1))
        self.core = ServerCore(options)
        self._server: grpc.Server | None = None
        # Prometheus metrics, on the REST port as TF Serving (http_server.cc).
        monitoring = (read_text_proto(options.monitoring_config_file, MonitoringConfig)
                      if options.monitoring_config_file else MonitoringConfig())
        self.metrics = Metrics() if monitoring.prometheus_config.enable else None
        self._metrics_path = monitoring.prometheus_config.path or DEFAULT_PATH
        self.rest: RestServer | None = None
        self._batcher: BatchScheduler | None = None
        # On by default here (TF Serving: off unless --enable_grpc_healthcheck_service).
        self._health = (health.HealthServicer() if options.enable_grpc_healthcheck_service
                        else None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> ModelServer:
        """Loads the models' versions (those there yet: the base paths are polled for
        the others), then listens.  Returns self once serving."""
        try:
            self.core.reload_config(self._config)
        except ServingError as error:  # tensorflow_model_server exits with the message
            raise ConfigError(f"cannot start the server: {error}") from error
        self._batcher = BatchScheduler(self._batching) if self._batching else None
        server = grpc.server(
            futures.ThreadPoolExecutor(self._max_threads, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])
        predictions = PredictionServicer(self.core, self._batcher,
                                         self.options.enable_serialization_as_tensor_content,
                                         self.metrics)
        models = ModelServicer(self.core)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
        if self._health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{self.host}:{self.options.port}"
        try:
            if self._credentials is not None:
                self.port = server.add_secure_port(address, self._credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as error:  # grpc's "Failed to bind"
            raise OSError(f"cannot listen on {address}: {error}") from error
        if self.options.rest_api_port:  # 0: no REST API, as tensorflow_model_server
            api = RestApi(self.core, predictions, models, self.metrics, self._metrics_path)
            self.rest = RestServer(api, self.host, self.options.rest_api_port,
                                   self.options.rest_api_timeout_in_ms).start()
        server.start()
        for service in HEALTH_SERVICES if self._health is not None else ():
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.core.start_polling(self.options.model_config_file,
                                self.options.model_config_file_poll_wait_seconds)
        self._server = server
        return self

    def stop(self, grace: float | None = 5.0) -> None:
        """Stops accepting calls, lets in-flight ones finish within `grace` seconds."""
        if self._server is None:
            return
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self.rest is not None:
            self.rest.stop()
            self.rest = None
        self._server.stop(grace).wait()
        self.core.stop()
        if self._batcher is not None:
            self._batcher.stop()
        self._server = None

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server is None or self._server.wait_for_termination(timeout)

    def __enter__(self) -> ModelServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class ServerProcess:
    """`python -m serving serve ...` as a child process, stopped with SIGTERM.

    The child prints `Running gRPC ModelServer at HOST:PORT ...` once it serves;
    `start()` waits for that line, so `port` is the port it really bound.
    """

    def __init__(self, model_base_path: str | os.PathLike | None,
                 model_name: str = DEFAULT_MODEL_NAME, *extra_args: str, port: int = 0,
                 host: str = "127.0.0.1", env: dict[str, str] | None = None):
        base_path = [f"--model_base_path={model_base_path}"] if model_base_path else []
        self.args = [sys.executable, "-m", "serving", "serve", f"--port={port}",
                     f"--host={host}", f"--model_name={model_name}", *base_path,
                     *extra_args]
        self.env = env
        self.host, self.port = host, port
        self.process: subprocess.Popen | None = None
        self.output: deque[str] = deque(maxlen=200)  # the child's last lines, for errors

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()

        def read_output():
            for line in self.process.stdout:
                line = line.rstrip("\n")
                self.output.append(line)
                match = _READY.match(line)
                if match and not ready.is_set():
                    self.host, self.port = match.group(1), int(match.group(2))
                    ready.set()
            ready.set()  # the child exited

        self._reader = threading.Thread(target=read_output, name="server-output", daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            tail = "\n".join(self.output)
            raise RuntimeError(f"model server did not start (exit code "
                               f"{self.process.returncode}):\n{tail}")
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout)  # it reads the child's output to its end
        self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
