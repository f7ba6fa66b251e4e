"""Evaluate a checkpoint, or an ensemble: top-1/top-5 error, centre crop and 10 patches.

Scores every image of a labelled split on its centre crop and on the average of the
softmax over the paper's ten patches (four corners, centre, and their reflections),
preprocessed as the checkpoint records it was trained (mean, sizes, classes), and
prints the weakest classes.  Several checkpoints are an ensemble, as the paper's
"5 CNNs" [paper §6, Table 2]: each is preprocessed by its own record, their softmax
averaged, classes matched by WNID; each one's errors are printed, then the ensemble's.
"""

from __future__ import annotations

import argparse

from keras_alexnet.commands import add_epoch_argument, chosen_checkpoints, require_checkpoints
from tfrecords_tools.base.cli import require_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="+",
                        help="a .keras checkpoint, or a training run's model directory; "
                             "several: their ensemble")
    parser.add_argument("data_dir", help="directory of the split's shards, or a TFDS "
                                         "prepared dataset")
    parser.add_argument("--split", default="validation", help="default: validation")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="images per batch (each ten patches) (default: 128)")
    parser.add_argument("--center-only", action="store_true",
                        help="skip the 10-patch average (10x faster)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    add_epoch_argument(parser)


def check(args: argparse.Namespace) -> None:
    require_checkpoints(args.checkpoint)
    require_paths(args.data_dir, what="data directory")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.evaluation import evaluate

    evaluate(chosen_checkpoints(args.checkpoint, args.epoch), args.data_dir, args.split,
             batch_size=args.batch_size, ten_crop=not args.center_only, output=args.output)
    return 0
