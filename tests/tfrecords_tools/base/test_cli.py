"""What the three tools share (`tfrecords_tools.base.cli`): no TensorFlow C++ log line on a run
unless asked for, one mapping from failures to exit statuses, Ctrl-C and SIGTERM as one
line."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from keras_alexnet.errors import AlexNetError, CheckpointError
from serving.errors import ConfigError, NotFoundError
from serving.server import ServerProcess
from tfrecords_tools.base.cli import BUG, TF_LOG_LINE, run_command
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.errors import DatasetError


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def tf_lines(*texts: str) -> list[str]:
    return [line for text in texts for line in text.splitlines() if TF_LOG_LINE.match(line)]


@pytest.mark.slow
def test_no_tensorflow_log_line_unless_asked_for(sample_archives, converted_shards, exported,
                                                 tmp_path, monkeypatch):
    # TensorFlow's logging at its defaults, as on a user's machine (conftest quiets it).
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    model, shards = tmp_path / "model", tmp_path / "shards"
    for command in (
            ["tfrecords_tools", "convert", str(sample_archives.directory), str(shards),
             "--splits", "validation", "--quiet"],
            ["keras_alexnet", "train", str(converted_shards), str(model), "--reduced",
             "--epochs", "1", "--steps-per-epoch", "2", "--validation-steps", "1",
             "--batch-size", "8", "--no-tensorboard"],
            ["keras_alexnet", "evaluate", str(model), str(converted_shards), "--center-only"],
            ["keras_alexnet", "export", str(model), "--export-base", str(tmp_path / "export")]):
        done = run(*command)
        assert done.returncode == 0, done.stderr[-2000:]
        assert not tf_lines(done.stdout, done.stderr), command
    image = tmp_path / "image.png"
    image.write_bytes(next(iter(exported.images.values())))
    with ServerProcess(tmp_path / "export" / "alexnet") as server:
        done = run("serving", "query", "--server", server.address, str(image))
        assert done.returncode == 0, done.stderr
        assert not tf_lines(done.stdout, done.stderr)
    assert not tf_lines(*server.output)  # `python -m serving serve`
    # The lines are there to be asked for (where this TensorFlow prints any at all).
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                           text=True, timeout=300)
    if tf_lines(probe.stderr):
        done = run("tfrecords_tools", "verify", str(shards), "--quiet", "--verbose")
        assert done.returncode == 0 and tf_lines(done.stderr)
        done = run("tfrecords_tools", "verify", str(shards), "--quiet",
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
        assert done.returncode == 0 and tf_lines(done.stderr)


def namespace(run_function) -> argparse.Namespace:
    return argparse.Namespace(run=run_function, verbose=False)


def test_user_errors_are_one_line_and_exit_1(capsys):
    for error in (FileNotFoundError(2, "No such file or directory", "cat.jpg"),
                  OSError("cannot listen on localhost:8500 (in use)"),
                  ArgumentError("--validation-shards 51: must be between 1 and 50"),
                  AlexNetError("learning_rate must be more than 0, got 0.0"),
                  NotFoundError("Servable not found for request: Latest(alexnet)"),
                  ConfigError("ssl.conf: server_key and server_cert are required"),
                  DatasetError("labels.txt:3: expected 'WNID<TAB>name', got 'x'")):
        def fail(args, error=error):
            raise error

        assert run_command(namespace(fail), tensorflow=False) == 1
        assert capsys.readouterr().err == f"error: {error}\n"


def test_a_warning_is_one_line_unless_verbose(capsys):
    def warn(args):
        warnings.warn("step 12: the loss 41.2 is far above ln(10) = 2.30", UserWarning,
                      stacklevel=1)

    assert run_command(namespace(warn), tensorflow=False) == 0
    assert capsys.readouterr().err == (
        "warning: step 12: the loss 41.2 is far above ln(10) = 2.30\n")
    verbose = argparse.Namespace(run=warn, verbose=True)
    with pytest.warns(UserWarning, match="step 12"):  # left to Python's own display
        assert run_command(verbose, tensorflow=False) == 0


@pytest.mark.parametrize("bug", [
    KeyError("shards"), ZeroDivisionError("division by zero"),
    ImportError("cannot import name 'x'"), TypeError("'NoneType' is not subscriptable"),
    OSError(24, "Too many open files"),  # the OS's, on no file of the user's
    ValueError("not enough values to unpack")])  # every user error is typed: a bug
def test_an_internal_error_shows_its_traceback_and_exits_70(bug, capsys):
    def deep_inside(args):
        raise bug

    assert run_command(namespace(deep_inside), tensorflow=False) == BUG == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in deep_inside" in err  # where it happened
    assert err.splitlines()[-1] == (f"internal error ({type(bug).__name__}): this is a bug; "
                                    f"please report it with the traceback above")


def test_verbose_shows_the_cause_chain_of_a_user_error(capsys):
    def fail(args):
        try:
            {}["conv1"]
        except KeyError as error:
            raise CheckpointError("model.keras: cannot load the checkpoint") from error

    assert run_command(namespace(fail), tensorflow=False) == 1
    assert capsys.readouterr().err == "error: model.keras: cannot load the checkpoint\n"
    verbose = argparse.Namespace(run=fail, verbose=True)
    assert run_command(verbose, tensorflow=False) == 1
    err = capsys.readouterr().err
    assert "KeyError: 'conv1'" in err and "in fail" in err  # the cause, and where
    assert "The above exception was the direct cause of the following exception" in err
    assert err.endswith("error: model.keras: cannot load the checkpoint\n")


@pytest.mark.parametrize(("sent", "status", "line"), [
    (signal.SIGINT, 130, "interrupted; rerun the same command to resume\n"),
    (signal.SIGTERM, 143, "terminated; rerun the same command to resume\n")])
def test_ctrl_c_and_sigterm_are_one_line(sent, status, line, capsys):
    def interrupted(args):
        os.kill(os.getpid(), sent)
        time.sleep(10)  # the handler runs at once, in this (the main) thread
        raise AssertionError("the signal did not interrupt the command")

    previous = signal.getsignal(signal.SIGTERM)
    assert run_command(namespace(interrupted), resume_hint="; rerun the same command to "
                       "resume", tensorflow=False) == status
    assert capsys.readouterr().err == line
    assert signal.getsignal(signal.SIGTERM) == previous  # restored

    def saved(args):
        raise KeyboardInterrupt("interrupted at step 7; the backup is saved")

    assert run_command(namespace(saved), tensorflow=False) == 130
    assert capsys.readouterr().err == "interrupted at step 7; the backup is saved\n"


def test_every_subcommand_takes_verbose():
    from keras_alexnet.commands import build_parser as keras_alexnet_parser
    from serving.__main__ import build_parser as serving_parser
    from tfrecords_tools.__main__ import build_parser as tfrecords_parser

    for parser in (keras_alexnet_parser(), serving_parser(), tfrecords_parser()):
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, command in commands.choices.items():
            assert any("--verbose" in action.option_strings for action in command._actions), \
                name


def test_serve_query_and_export_default_to_one_model_name():
    import inspect

    import keras_alexnet
    from serving.__main__ import build_parser
    from serving.client import Client

    exported_as = inspect.signature(keras_alexnet.export).parameters["model_name"].default
    parser = build_parser()
    assert parser.parse_args(["serve", "--model_base_path", "export/x"]).model_name == \
        exported_as
    assert parser.parse_args(["query", "cat.jpg"]).model_name == exported_as
    assert Client("127.0.0.1:1").options.model_name == exported_as
