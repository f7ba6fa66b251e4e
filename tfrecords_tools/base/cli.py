"""What the three command-line tools share (`python -m keras_alexnet`, `python -m
tfrecords_tools`, `python -m serving`): `--verbose`, TensorFlow's start-up lines kept
off the terminal, and one mapping from what happened to the exit status.

    0    done
    1    an error the user can act on: one line, "error: ...".  That is a `UserError`
         of any of the packages (`tfrecords_tools.errors`), a tool's own classes (a
         server's refusal), or an OSError on the user's files (one naming its file, a
         full disk, or one our code raised with a message of its own); with
         `--verbose`, its traceback and the chain of errors that caused it come first
    2    a usage error (argparse's message)
    70   anything else: a bug (sysexits' EX_SOFTWARE).  Its whole traceback, causes
         included, then one line asking for a report
    130  Ctrl-C, and 143 SIGTERM: one line saying what was kept, never a traceback

Only the standard library is imported here, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from tfrecords_tools.base import storage
from tfrecords_tools.base.errors import UserError

BUG = 70  # sysexits.h EX_SOFTWARE

#: TensorFlow's C++ log lines (absl's format) and the line absl prints before them.
TF_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |"
                         r"WARNING: All log messages before absl::InitializeLog\(\) is "
                         r"called are written to STDERR)")
LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """The `--verbose` flag every subcommand of the three tools takes."""
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own log lines (as does setting "
                             "TF_CPP_MIN_LOG_LEVEL yourself)")


@contextlib.contextmanager
def _without_tensorflow_log_lines() -> Iterator[None]:
    """Captures file descriptor 2 (native code writes there, not to `sys.stderr`) and
    passes on every line that is not a TensorFlow log line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not TF_LOG_LINE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def quiet_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow without its C++ start-up lines (oneDNN, CUDA probing, and on a
    machine without a GPU an `E ... failed call to cuInit` that reads like a failure),
    and keeps its later ones off: TF_CPP_MIN_LOG_LEVEL=3, inherited by child processes.
    `verbose`, or a TF_CPP_MIN_LOG_LEVEL of the user's below 3, shows them all."""
    if verbose or os.environ.setdefault(LOG_LEVEL, "3") != "3":
        return
    # The lines printed while TensorFlow loads come before absl reads the level.
    with _without_tensorflow_log_lines():
        import tensorflow  # noqa: F401


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is the user's to act on, as the module docstring says."""
    if isinstance(error, OSError):
        # The OS's errors name the file (os.open, shutil); ours carry a message and no
        # errno.  Without a file, an OS error is the program's, except a full disk.
        return (error.filename is not None or error.errno is None
                or error.errno == errno.ENOSPC)
    return isinstance(error, UserError)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the tools print errors: one line of text, without the source line
    that raised it (`--verbose` shows Python's usual form)."""
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


class _Terminated:
    """Whether SIGTERM (rather than Ctrl-C) raised the KeyboardInterrupt."""

    received = False

    @classmethod
    def handler(cls, signum, frame) -> None:
        # A scheduler's SIGTERM (preemption, `kubectl delete`) cleans up as Ctrl-C does:
        # training saves a backup, the converter keeps its finished shards.
        cls.received = True
        raise KeyboardInterrupt


def require_paths(*values: str | os.PathLike | None, what: str = "file or directory",
                  hint: str = "") -> None:
    """A UserError naming the first of `values` that is a local path with nothing there
    (URLs and None pass: their checks need their libraries); `hint` says what to do.
    Commands call it in their `check`, before TensorFlow loads."""
    for value in values:
        if value is None or storage.is_url(value) or Path(value).exists():
            continue
        raise UserError(f"{value}: no such {what}{hint}")


def run_command(args: argparse.Namespace, *, resume_hint: str = "",
                tensorflow: bool = True) -> int:
    """Runs `args.run(args)` as every tool does: first `args.check(args)` where the
    command has one (its arguments checked before TensorFlow loads, so a mistyped path
    fails at once), TensorFlow imported quietly (unless `tensorflow` is false: a
    command that never loads it), the exit status mapped as the module docstring says.
    Ctrl-C prints "interrupted" and SIGTERM "terminated", followed by `resume_hint`,
    unless the code raised its KeyboardInterrupt with a message of its own."""
    run: Callable[[argparse.Namespace], int | None] = args.run
    previous = signal.signal(signal.SIGTERM, _Terminated.handler)
    _Terminated.received = False
    try:
        with warnings.catch_warnings():
            if not getattr(args, "verbose", False):
                warnings.showwarning = _one_line_warning
            if getattr(args, "check", None):
                args.check(args)
            if tensorflow:
                quiet_tensorflow(getattr(args, "verbose", False))
            return run(args) or 0
    except KeyboardInterrupt as error:
        what = "terminated" if _Terminated.received else "interrupted"
        print(f"{error}" or f"{what}{resume_hint}", file=sys.stderr)
        return 143 if _Terminated.received else 130
    except Exception as error:
        if is_user_error(error):
            if getattr(args, "verbose", False):
                traceback.print_exception(error, file=sys.stderr)
            print(f"error: {error}", file=sys.stderr)
            return 1
        traceback.print_exception(error, file=sys.stderr)
        print(f"internal error ({type(error).__name__}): this is a bug; please report it "
              f"with the traceback above", file=sys.stderr)
        return BUG
    finally:
        signal.signal(signal.SIGTERM, previous)
