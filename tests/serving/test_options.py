"""One options object: the `serve` flags, `ModelServer`'s keywords and `ServerCore` read
the same defaults."""

from __future__ import annotations

import dataclasses

import pytest

from serving.__main__ import build_parser
from serving.options import CLIENT_FLAGS, ClientOptions, ServerOptions
from tfrecords_tools.base.options import from_args


def parse(*flags: str) -> ServerOptions:
    args, unknown = build_parser().parse_known_args(["serve", *flags])
    assert not unknown
    return from_args(ServerOptions, args)


def test_every_option_is_a_flag_with_the_fields_default_shown_in_help():
    assert parse() == ServerOptions()
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    text = " ".join(serve.format_help().split())  # argparse's line breaks undone
    for option in dataclasses.fields(ServerOptions):
        action = next(a for a in serve._actions if a.dest == option.name)
        assert action.option_strings == [f"--{option.name}"]
        assert action.default == option.default
    assert "--port PORT gRPC port; 0 picks a free one (default: 8500)" in text
    assert "tensorflow_model_server's default is false) (default: true)" in text


@pytest.mark.parametrize(("flags", "expected"), [
    (["--enable_batching=true"], dict(enable_batching=True)),
    (["--enable_batching"], dict(enable_batching=True)),
    (["--enable_batching=false", "--enable_grpc_healthcheck_service=false"],
     dict(enable_batching=False, enable_grpc_healthcheck_service=False)),
    (["--model_name=resnet", "--rest_api_port=8501", "--file_system_poll_wait_seconds=0.5",
      "--grpc_max_threads", "4"],
     dict(model_name="resnet", rest_api_port=8501, file_system_poll_wait_seconds=0.5,
          grpc_max_threads=4)),
])
def test_tensorflow_model_server_flag_spellings(flags, expected):
    assert parse(*flags) == ServerOptions(**expected)


def test_a_bad_boolean_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        parse("--enable_batching=maybe")
    assert exited.value.code == 2
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    ([], "Both server_options.model_base_path and server_options.model_config_file are "
         "empty!"),
    (["--model_base_path", "export", "--batching_parameters_file", "batching.txt"],
     "server_options.batching_parameters_file is set without setting "
     "server_options.enable_batching to true.")])
def test_flags_unusable_together_are_a_usage_error_before_anything_starts(flags, message,
                                                                           capsys):
    from serving.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m serving serve ")
    assert err.endswith(f"python -m serving serve: error: {message}\n")


def test_model_server_takes_options_or_their_fields(tmp_path):
    from serving.server import ModelServer

    by_keywords = ModelServer(tmp_path, "resnet", port=0, rest_api_port=8501)
    assert by_keywords.options == ServerOptions(model_base_path=tmp_path, model_name="resnet",
                                                port=0, rest_api_port=8501)
    assert ModelServer(options=by_keywords.options).options is by_keywords.options
    with pytest.raises(TypeError, match="options or their fields, not both"):
        ModelServer(options=by_keywords.options, port=1)
    with pytest.raises(TypeError, match="rest_port"):
        ModelServer(tmp_path, rest_port=8501)
    with pytest.raises(ValueError) as empty:
        ModelServer(options=ServerOptions())
    assert str(empty.value) == ("Both server_options.model_base_path and "
                                "server_options.model_config_file are empty!")


def test_query_and_status_take_the_clients_connection_fields_as_flags():
    parser = build_parser()
    for command in ("query", "status"):
        args = parser.parse_args([command, *(["cat.jpg"] if command == "query" else [])])
        assert from_args(ClientOptions, args) == ClientOptions()
    args = parser.parse_args(["status", "--server", "host:9000", "--model_name", "resnet",
                              "--version_label", "stable", "--timeout", "5"])
    assert from_args(ClientOptions, args) == ClientOptions(
        target="host:9000", model_name="resnet", version_label="stable", timeout=5.0)
    status = parser._subparsers._group_actions[0].choices["status"]
    text = " ".join(status.format_help().split())
    assert "--server TARGET host:port of the server (default: 127.0.0.1:8500)" in text
    flags = {a.dest for a in status._actions if a.option_strings} - {"help", "verbose"}
    assert flags == set(CLIENT_FLAGS)


def test_client_takes_options_or_their_fields():
    from serving.client import Client

    with Client("127.0.0.1:1", "resnet", timeout=5) as client:
        assert client.options == ClientOptions(target="127.0.0.1:1", model_name="resnet",
                                               timeout=5)
    with pytest.raises(TypeError, match="options or their fields, not both"):
        Client("127.0.0.1:1", options=ClientOptions())
    for bad, message in ((dict(timeout=0), "timeout must be more than 0, got 0"),
                         (dict(retries=-1), "retries must be at least 0, got -1"),
                         (dict(version=1, version_label="stable"),
                          "give version or version_label, not both")):
        with pytest.raises(ValueError, match=message):
            ClientOptions(**bad)
