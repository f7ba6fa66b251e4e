"""Run the whole system end to end on a generated sample: no arguments, no downloads.

Generates ILSVRC-shaped archives, converts them to TFRecord shards, trains the
reduced two-tower AlexNet until it learns, evaluates it (centre crop and ten
patches), exports a SavedModel, serves it on a local TF-Serving-protocol gRPC
server, classifies held-out images through `serving.Client`, and draws the
paper's pictures.  About 30 seconds on two CPU cores (`--quick`: about 15 s).

Everything goes to --workdir (default ./demo-output) and stays there: the summary
says what to open and what to run next.  A rerun in the same directory resumes; with
the fixed seed, two fresh runs print the same accuracies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_WORKDIR = Path("demo-output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"directory to write everything to and keep it in (default "
                             f"./{DEFAULT_WORKDIR}; a directory that is not empty must hold "
                             f"an earlier demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a few images and two epochs: checks every stage in about "
                             "15 seconds, without learning much (the test suite runs this)")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.demo import next_steps, run_demo, summary
    from keras_alexnet.errors import AlexNetError

    result = run_demo(args.workdir, quick=args.quick)
    print(summary(result))
    print(next_steps(result))
    if not result.learned:
        raise AlexNetError("the model did not reach the expected validation accuracy; see "
                           f"{result.paths['picture:curves']}")
    return 0
