"""`python -m serving` (console script `alexnet-serving`): serve, query, status.

    python -m serving serve --model_name=alexnet --model_base_path=export/alexnet
    python -m serving query --model_name=alexnet cat.jpg dog.png
    python -m serving status --model_name=alexnet
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from serving.options import ServerOptions, add_client_arguments, add_server_arguments
from tfrecords_tools.base.cli import add_verbose_argument, run_command
from tfrecords_tools.base.options import from_args


class _PrintVersion(argparse.Action):
    """`--version`, as `tensorflow_model_server --version` prints it."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"TensorFlow ModelServer: keras-alexnet serving {version('keras-alexnet')}\n"
              f"TensorFlow Library: {version('tensorflow')}")
        parser.exit(0)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--version", action=_PrintVersion,
                        help="print the server's and TensorFlow's versions")


def serve(args: argparse.Namespace) -> int:
    from serving.server import READY_LINE, REST_LINE, ModelServer

    server = ModelServer(options=from_args(ServerOptions, args))
    server.start()
    stopping, received = threading.Event(), []

    def stop(signum, frame) -> None:
        received.append(signum)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):  # a clean stop, as tensorflow_model_server
        signal.signal(signum, stop)
    if server.rest is not None:  # before the ready line, which ServerProcess waits for
        print(REST_LINE.format(address=f"{server.rest.host}:{server.rest.port}"), flush=True)
    print(READY_LINE.format(address=server.address), flush=True)
    stopping.wait()
    server.stop(grace=5.0)
    print("Server stopped", flush=True)
    # As every tool here (and a shell's status for a process a signal ended): 130 after
    # Ctrl-C, 143 after SIGTERM.
    return 128 + received[0]


def _client(args: argparse.Namespace):
    from serving.messages import import_without_tensorflow

    import_without_tensorflow()  # query and status never run TensorFlow
    from serving.client import Client
    from serving.options import ClientOptions

    return Client(options=from_args(ClientOptions, args))


def _not_served(args: argparse.Namespace, error: Exception) -> Exception:
    """A NOT_FOUND with what to do: TF Serving's message names the model asked for, not
    the ones served (no API lists them)."""
    from serving.errors import NotFoundError

    return NotFoundError(f"{error.message}; {args.target} serves no model named "
                         f"{args.model_name!r}: pass --model_name with the name the server "
                         f"was started with (`serve --model_name`; TF Serving's default is "
                         f"'default')")


def query(args: argparse.Namespace) -> int:
    from serving.errors import InvalidArgumentError, NotFoundError, decoder_refusal

    images = []
    for path in args.images:
        with open(path, "rb") as file:
            images.append(file.read())
    with _client(args) as client:
        try:
            results = client.classify(images)
        except NotFoundError as error:
            raise _not_served(args, error) from error
        except InvalidArgumentError as error:
            index = getattr(error, "index", None)
            if index is None:
                raise
            reason = decoder_refusal(error.message) or error.message
            raise InvalidArgumentError(f"{args.images[index]}: refused by the server: "
                                       f"{reason}") from error
    from serving.client import format_top5

    for path, top5 in zip(args.images, results, strict=True):
        print(format_top5(path, top5))
    return 0


def status(args: argparse.Namespace) -> int:
    from serving.errors import NotFoundError

    with _client(args) as client:
        health = client.health()
        try:
            versions = client.status(version=args.version)
        except NotFoundError as error:
            raise _not_served(args, error) from error
    print(f"server {args.target}: {health}")
    for version in versions:
        error = f"  ({version.error_message})" if version.error_message else ""
        print(f"  {args.model_name} version {version.version}: {version.state}{error}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a SavedModel over TensorFlow Serving's gRPC API, or query one.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser("serve", help="run a local TF Serving-compatible server")
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(run=serve, parser=serve_parser)
    query_parser = commands.add_parser(
        "query", help="top-5 classes of image files",
        description="Sends image files to a TF Serving server (this package's or "
                    "tensorflow_model_server) and prints each one's top-5 classes.")
    add_client_arguments(query_parser)
    query_parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    query_parser.set_defaults(run=query)
    status_parser = commands.add_parser(
        "status", help="health and model version states",
        description="Prints the server's health and the state of each version of a model.")
    add_client_arguments(status_parser)
    status_parser.set_defaults(run=status)
    for command in (serve_parser, query_parser, status_parser):
        add_verbose_argument(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "serve" and (problem := from_args(ServerOptions, args).usage_error()):
        args.parser.error(problem)  # as argparse's own: the usage, the message, status 2
    if unknown:
        if args.command != "serve":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        # tensorflow_model_server (main.cc) names the first flag it does not know, and
        # starts anyway; so does this server, for every flag it lacks.
        print(f"unknown argument: {unknown[0]}" + (f" (and {len(unknown) - 1} more: "
              f"{' '.join(unknown[1:])})" if len(unknown) > 1 else ""), file=sys.stderr)
    # The client's commands never load TensorFlow (serving.messages).
    return run_command(args, tensorflow=args.command == "serve")


if __name__ == "__main__":
    sys.exit(main())
