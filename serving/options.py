"""The server's and the client's options, each default written once: TF Serving's
`Server::Options`, and `ClientOptions`.

`python -m serving serve` binds one flag to every `ServerOptions` field, with
tensorflow_model_server's flag names and spellings (`--enable_batching=true`, main.cc),
and `query` and `status` one to each of the client's connection fields
(`tfrecords_tools.base.options`), so `--help` shows these defaults; `ModelServer` and
`Client` take the same objects (or their fields as keywords).

Only the standard library is imported here, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from serving import DEFAULT_MODEL_NAME
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.base.options import add_arguments, check, option

#: tensorflow_model_server (and the client's flags, alike) spell a flag as its field.
SPELLING = "--{}".format


def _flag_bool(value: str) -> bool:
    """tensorflow_model_server's boolean flags: `--enable_batching=true`."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


#: `--enable_batching` alone means true, as absl's flags.
FLAG_BOOL = {"type": _flag_bool, "nargs": "?", "const": True}


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """What a `ModelServer` serves and how; the fields are tensorflow_model_server's
    flags of the same names."""

    port: int = option(8500, "gRPC port; 0 picks a free one")
    host: str = option("127.0.0.1", "interface to bind (0.0.0.0 for all; "
                       "tensorflow_model_server binds all)")
    model_name: str = option(DEFAULT_MODEL_NAME, "name clients ask for (the name "
                             "`keras_alexnet export` writes; tensorflow_model_server's "
                             "default is 'default')")
    model_base_path: str | os.PathLike | None = option(
        None, "directory of integer version directories, each a SavedModel (required "
        "unless --model_config_file)")
    model_config_file: str | os.PathLike | None = option(
        None, "ModelServerConfig text proto: several models, version policies and labels "
        "(then --model_name and --model_base_path are ignored)")
    model_config_file_poll_wait_seconds: float = option(
        0, "re-read --model_config_file this often; 0: once")
    allow_version_labels_for_unavailable_models: bool = option(
        False, "let a new label name a version that is not loaded yet")
    enable_batching: bool = option(False, "batch concurrent requests")
    batching_parameters_file: str | os.PathLike | None = option(
        None, "BatchingParameters text proto (max_batch_size, ...)")
    ssl_config_file: str | os.PathLike | None = option(None, "SSLConfig text proto: serve "
                                                       "over TLS")
    file_system_poll_wait_seconds: float = option(1.0, "how often to look for a new "
                                                  "version; 0 never")
    enable_grpc_healthcheck_service: bool = option(
        True, "the grpc.health.v1 service (tensorflow_model_server's default is false)")
    monitoring_config_file: str | os.PathLike | None = option(
        None, "MonitoringConfig text proto: prometheus_config { enable: true } serves "
        "Prometheus metrics on the REST port")
    max_num_load_retries: int = option(5, "retries of a version that fails to load")
    load_retry_interval_micros: int = option(60_000_000, "between load retries (one "
                                             "minute)")
    rest_api_port: int = option(0, "serve TF Serving's REST API on this port too; 0: no "
                                "REST API")
    rest_api_timeout_in_ms: int = option(30_000, "REST socket timeout")
    grpc_max_threads: int | None = option(None, "threads handling gRPC calls (unset: "
                                          "max(32, 4 x cores))")
    enable_serialization_as_tensor_content: bool = option(
        False, "answer with packed tensor_content instead of typed *_val fields")

    def usage_error(self) -> str | None:
        """What makes these options unusable together, in server.cc's words; None when
        nothing does.  `serve` reports it as a usage error, `ModelServer` raises it."""
        if not self.model_base_path and not self.model_config_file:
            return ("Both server_options.model_base_path and "
                    "server_options.model_config_file are empty!")
        if self.batching_parameters_file and not self.enable_batching:
            return ("server_options.batching_parameters_file is set without setting "
                    "server_options.enable_batching to true.")
        return None


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """How a `Client` calls a server: the model_spec of every call (the server's latest
    version when neither version nor label is given), deadlines, retries, TLS, and how
    `classify` splits many images into requests."""

    target: str = option("127.0.0.1:8500", "host:port of the server", names=("--server",))
    model_name: str = option(DEFAULT_MODEL_NAME, "the served model's name (`serve "
                             "--model_name`; tensorflow_model_server's default is "
                             "'default')")
    signature_name: str = option("serving_default", "the signature every call runs")
    version: int | None = option(None, "model version (none given: the latest)")
    version_label: str | None = option(None, "model version label")
    timeout: float = option(30.0, "seconds allowed for each attempt of each call", above=0)
    retries: int = option(3, "further attempts after UNAVAILABLE (a server starting, "
                          "restarting or its batch queue full), with exponential backoff; "
                          "other errors raise at once", at_least=0)
    backoff_seconds: float = option(0.1, "the first retry's wait, doubled each time up to "
                                    "2 s", at_least=0)
    tls: bool = option(False, "use TLS (implied by any of the PEM files)")
    root_certificates: str | bytes | os.PathLike | None = option(
        None, "PEM file to verify a TLS server")
    private_key: str | bytes | os.PathLike | None = option(
        None, "the client's own PEM key, for servers that verify clients")
    certificate_chain: str | bytes | os.PathLike | None = option(
        None, "the client's own PEM certificate, for servers that verify clients")
    ssl_target_name_override: str | None = option(
        None, "the name the server's certificate must hold, where it is not the target's")
    # Requests stay below grpc's default 4 MB limit, so servers that never raised it
    # (and proxies in between) accept them; a single larger image still goes alone.
    max_request_bytes: int = option(4 * 1024 * 1024 - 64 * 1024, "encoded image bytes in "
                                    "one classify request at most", at_least=1)
    max_batch: int = option(64, "images in one classify request at most", at_least=1)

    def __post_init__(self):
        check(self, ArgumentError)
        if self.version is not None and self.version_label is not None:
            raise ArgumentError("give version or version_label, not both")


#: The client's fields that `query` and `status` take as flags.
CLIENT_FLAGS = ("target", "model_name", "version", "version_label", "timeout",
                "root_certificates")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """`--NAME` for every `ServerOptions` field, as tensorflow_model_server spells it."""
    add_arguments(parser, ServerOptions, spelling=SPELLING, boolean=FLAG_BOOL)


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags of `query` and `status` (`--server`, `--model_name`, ...)."""
    add_arguments(parser, ClientOptions, fields=CLIENT_FLAGS, spelling=SPELLING,
                  boolean=FLAG_BOOL)
