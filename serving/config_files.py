"""The text-format configuration files `tensorflow_model_server` reads.

`--ssl_config_file` holds a `tensorflow.serving.SSLConfig`, `--batching_parameters_file`
a `tensorflow.serving.BatchingParameters` and `--monitoring_config_file` a
`tensorflow.serving.MonitoringConfig`.  The tensorflow-serving-api wheel ships none of
them, so they are declared here with the field names and numbers of
tensorflow_serving/config/ssl_config.proto, .../monitoring_config.proto and
tensorflow_serving/servables/tensorflow/session_bundle_config.proto: the same files
parse the same way for both servers.
"""

from __future__ import annotations

import contextlib
import os

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401  (registers wrappers.proto in the pool)
)

from serving.errors import ConfigError

_F = descriptor_pb2.FieldDescriptorProto


def _message(name: str, fields: list[tuple[str, int, int, int, str]]):
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, label, type_name in fields:
        message.field.add(name=field_name, number=number, type=kind, label=label,
                          type_name=type_name or None)
    return message


def _build():
    file = descriptor_pb2.FileDescriptorProto(
        name="keras_alexnet_serving/config_files.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    one, many = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    string, boolean, message, int64 = _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_MESSAGE, _F.TYPE_INT64
    file.message_type.append(_message("SSLConfig", [
        ("server_key", 1, string, one, ""), ("server_cert", 2, string, one, ""),
        ("custom_ca", 3, string, one, ""), ("client_verify", 4, boolean, one, "")]))
    wrapped = ".google.protobuf.Int64Value"
    file.message_type.append(_message("BatchingParameters", [
        ("max_batch_size", 1, message, one, wrapped),
        ("batch_timeout_micros", 2, message, one, wrapped),
        ("max_enqueued_batches", 3, message, one, wrapped),
        ("num_batch_threads", 4, message, one, wrapped),
        ("thread_pool_name", 5, message, one, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, int64, many, ""),
        ("pad_variable_length_inputs", 7, boolean, one, "")]))
    file.message_type.append(_message("PrometheusConfig", [
        ("enable", 1, boolean, one, ""), ("path", 2, string, one, "")]))
    file.message_type.append(_message("MonitoringConfig", [
        ("prometheus_config", 1, message, one, ".tensorflow.serving.PrometheusConfig")]))
    pool = descriptor_pool.Default()
    with contextlib.suppress(TypeError):  # already added by an earlier import
        pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
            for n in ("SSLConfig", "BatchingParameters", "MonitoringConfig"))


SSLConfig, BatchingParameters, MonitoringConfig = _build()


def read_text_proto(path: str | os.PathLike, message_class):
    """Parses a text-format file, naming the file in any error."""
    try:
        with open(path, encoding="utf-8") as file:
            return text_format.Parse(file.read(), message_class())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except text_format.ParseError as error:
        raise ConfigError(f"{path}: not a valid {message_class.DESCRIPTOR.name} text proto: "
                          f"{error}") from error
