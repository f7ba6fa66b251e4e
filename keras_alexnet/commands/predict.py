"""Top-5 classes of image files, in-process, from a checkpoint, an ensemble or a SavedModel.

Both paths run the exported `serving_default` computation: decode, rescale, centre
crop and mean subtraction as in evaluation, then the network's softmax (for several
checkpoints, each one's preprocessing and the mean of their softmax, as `export
--ensemble` writes it).
"""

from __future__ import annotations

import argparse

from keras_alexnet.commands import require_checkpoints
from tfrecords_tools.base.cli import require_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", action="append",
                        help="a .keras checkpoint or a training run's model directory; "
                             "repeat it for an ensemble")
    source.add_argument("--saved-model",
                        help="an exported version directory, or its model directory (latest)")
    parser.add_argument("--data-dir",
                        help="only for a checkpoint saved without its input contract: the "
                             "shard directory it was trained on")


def check(args: argparse.Namespace) -> None:
    require_paths(*args.images, what="image file")
    require_checkpoints(args.checkpoint or [])
    require_paths(args.saved_model, what="SavedModel directory")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.saved_model import classify_files
    from serving.client import format_top5

    results = classify_files(args.images, checkpoint=args.checkpoint,
                             saved_model=args.saved_model, data_dir=args.data_dir)
    for path, top5 in zip(args.images, results, strict=True):
        print(format_top5(path, top5))
    return 0
