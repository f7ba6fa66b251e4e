"""The server's options, each default written once: TF Serving's `Server::Options`.

`python -m serving serve` binds one flag to every field, with tensorflow_model_server's
flag names and spellings (`--enable_batching=true`, main.cc), so `--help` shows these
defaults; `ModelServer` takes the same object (or its fields as keywords).

Only the standard library is imported here, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import field

from serving import DEFAULT_MODEL_NAME


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """What a `ModelServer` serves and how; the fields are tensorflow_model_server's
    flags of the same names."""

    port: int = field(default=8500, metadata={"help": "gRPC port; 0 picks a free one"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "interface to bind (0.0.0.0 for all; tensorflow_model_server binds all)"})
    model_name: str = field(default=DEFAULT_MODEL_NAME, metadata={
        "help": "name clients ask for (the name `keras_alexnet export` writes; "
                "tensorflow_model_server's default is 'default')"})
    model_base_path: str | os.PathLike | None = field(default=None, metadata={
        "help": "directory of integer version directories, each a SavedModel (required "
                "unless --model_config_file)"})
    model_config_file: str | os.PathLike | None = field(default=None, metadata={
        "help": "ModelServerConfig text proto: several models, version policies and "
                "labels (then --model_name and --model_base_path are ignored)"})
    model_config_file_poll_wait_seconds: float = field(default=0, metadata={
        "help": "re-read --model_config_file this often; 0: once"})
    allow_version_labels_for_unavailable_models: bool = field(default=False, metadata={
        "help": "let a new label name a version that is not loaded yet"})
    enable_batching: bool = field(default=False, metadata={
        "help": "batch concurrent requests"})
    batching_parameters_file: str | os.PathLike | None = field(default=None, metadata={
        "help": "BatchingParameters text proto (max_batch_size, ...)"})
    ssl_config_file: str | os.PathLike | None = field(default=None, metadata={
        "help": "SSLConfig text proto: serve over TLS"})
    file_system_poll_wait_seconds: float = field(default=1.0, metadata={
        "help": "how often to look for a new version; 0 never"})
    enable_grpc_healthcheck_service: bool = field(default=True, metadata={
        "help": "the grpc.health.v1 service (tensorflow_model_server's default is false)"})
    monitoring_config_file: str | os.PathLike | None = field(default=None, metadata={
        "help": "MonitoringConfig text proto: prometheus_config { enable: true } serves "
                "Prometheus metrics on the REST port"})
    max_num_load_retries: int = field(default=5, metadata={
        "help": "retries of a version that fails to load"})
    load_retry_interval_micros: int = field(default=60_000_000, metadata={
        "help": "between load retries (one minute)"})
    rest_api_port: int = field(default=0, metadata={
        "help": "serve TF Serving's REST API on this port too; 0: no REST API"})
    rest_api_timeout_in_ms: int = field(default=30_000, metadata={
        "help": "REST socket timeout"})
    grpc_max_threads: int | None = field(default=None, metadata={
        "help": "threads handling gRPC calls (unset: max(32, 4 x cores))"})
    enable_serialization_as_tensor_content: bool = field(default=False, metadata={
        "help": "answer with packed tensor_content instead of typed *_val fields"})

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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerOptions:
        """The options of parsed `add_arguments` flags (other attributes ignored)."""
        return cls(**{option.name: getattr(args, option.name)
                      for option in dataclasses.fields(cls)})


def _flag_bool(value: str) -> bool:
    """tensorflow_model_server's boolean flags: `--enable_batching=true`."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--NAME` flag per `ServerOptions` field, its default and type the field's."""
    types = typing.get_type_hints(ServerOptions)
    for option in dataclasses.fields(ServerOptions):
        kind = types[option.name]
        help = option.metadata["help"]
        if option.default is not None:
            shown = str(option.default).lower() if kind is bool else option.default
            help = f"{help} (default {shown})"
        if kind is bool:  # `--enable_batching` alone means true, as absl's flags
            parser.add_argument(f"--{option.name}", type=_flag_bool, nargs="?", const=True,
                                default=option.default, help=help)
        else:  # `str | os.PathLike | None` parses as str
            parser.add_argument(f"--{option.name}", type=(typing.get_args(kind) or (kind,))[0],
                                default=option.default, help=help)
