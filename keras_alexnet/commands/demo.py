"""Run the whole system end to end on a generated sample: no arguments, no downloads.

Generates ILSVRC-shaped archives, converts them to TFRecord shards, trains the
reduced two-tower AlexNet until it learns, evaluates it (centre crop and ten
patches), exports a SavedModel, serves it on a local TF-Serving-protocol gRPC
server, classifies held-out images through `serving.Client`, and draws the
paper's pictures.  About 2-4 minutes on two CPU cores.

Without --workdir everything goes to a temporary directory that is removed at
the end; give --workdir DIR to keep the outputs (a rerun there resumes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=None,
                        help="directory to write and keep everything in (default: a "
                             "temporary directory, removed at the end)")
    parser.add_argument("--quick", action="store_true",
                        help="a few images and two epochs: checks every stage in about a "
                             "minute, without learning much (the test suite runs this)")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.demo import run_demo, summary

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="keras-alexnet-demo-"))
    try:
        result = run_demo(workdir, quick=args.quick)
        print(summary(result))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"Removed the temporary {workdir}; pass --workdir DIR to keep the outputs.")
    if not result.learned:
        print("error: the model did not reach the expected validation accuracy; see "
              "the training curves", file=sys.stderr)
        return 1
    return 0
