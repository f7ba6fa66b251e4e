"""Draw the paper's pictures as PNG files from any checkpoint and converted dataset.

  kernels      conv1 kernels, tower a above tower b        [paper Figure 3]
  predictions  top-5 predictions with score bars           [paper Figure 4, left]
  neighbours   nearest training images by fc7 distance     [paper Figure 4, right]
  curves       loss, top-1/top-5 error and learning rate from training_log.csv

CHECKPOINT is a `.keras` file or a training run's model directory (its latest
checkpoint).  DATA_DIR is a directory written by `python -m tfrecords_tools convert`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pictures = parser.add_subparsers(dest="picture", required=True, metavar="PICTURE")

    kernels = pictures.add_parser(
        "kernels", help="conv1 kernels as 11x11 colour tiles, tower a above tower b",
        description="The first layer's kernels as colour tiles, tower a's rows above tower "
                    "b's [paper Figure 3]; each tile is stretched to its own range.")
    _checkpoint(kernels)
    kernels.add_argument("--columns", type=int, default=16,
                         help="tiles per row (default 16: 48 kernels a tower in 3 rows)")
    kernels.add_argument("--scale", type=int, default=4,
                         help="picture pixels per kernel pixel (default 4)")
    _output(kernels, "kernels.png")

    predictions = pictures.add_parser(
        "predictions", help="top-5 predictions per image with score bars",
        description="Top-5 predictions of the centre crop of each image, the true label "
                    "under the image, its bar in red when among the five [paper Figure 4].")
    _checkpoint(predictions)
    _data(predictions)
    predictions.add_argument("--columns", type=int, default=4, help="images per row")
    _output(predictions, "predictions.png")

    neighbours = pictures.add_parser(
        "neighbours", help="nearest training images to query images by fc7 distance",
        description="For each query image, the training images whose fc7 vectors are "
                    "nearest in Euclidean distance [paper Figure 4, right].  The training "
                    "vectors are computed once into an index directory and reused while "
                    "the checkpoint and dataset stay the same.")
    _checkpoint(neighbours)
    _data(neighbours, count=4)
    neighbours.add_argument("-k", type=int, default=6, help="neighbours per query (6)")
    neighbours.add_argument("--index-split", default="train",
                            help="the split to search (default train)")
    neighbours.add_argument("--index", type=Path, default=None,
                            help="index directory (default: beside the checkpoint, "
                                 "<checkpoint>.fc7-index-<split>)")
    neighbours.add_argument("--rebuild-index", action="store_true",
                            help="recompute the index even if it matches")
    _output(neighbours, "neighbours.png")

    curves = pictures.add_parser(
        "curves", help="training curves from <model_dir>/training_log.csv",
        description="Loss, top-1/top-5 error (1 - accuracy) and learning rate per epoch, "
                    "from the CSV log that training writes.")
    curves.add_argument("log", type=Path, metavar="MODEL_DIR_OR_CSV",
                        help="a model directory holding training_log.csv, or the CSV")
    _output(curves, "curves.png")


def _checkpoint(parser):
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                        help="a .keras checkpoint or a model directory (latest checkpoint)")


def _data(parser, count=8):
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR",
                        help="shard directory from `python -m tfrecords_tools convert`, "
                             "or a TFDS prepared dataset")
    parser.add_argument("--split", default="validation",
                        help="split the images come from (default validation)")
    parser.add_argument("--count", type=int, default=count, help=f"images (default {count})")
    parser.add_argument("--start", type=int, default=0,
                        help="index of the first image in the split (default 0)")


def _output(parser, default):
    parser.add_argument("-o", "--output", type=Path, default=Path(default),
                        help=f"PNG file to write (default ./{default})")


def default_index_dir(checkpoint: Path, split: str) -> Path:
    """`<run>/checkpoints/epoch-0042.keras` -> `<run>/checkpoints/epoch-0042.fc7-index-train`."""
    if checkpoint.is_dir():
        return checkpoint / f"fc7-index-{split}"
    return checkpoint.with_name(f"{checkpoint.stem}.fc7-index-{split}")


def draw(args: argparse.Namespace) -> Path:
    """Writes the picture `args` ask for; returns its path."""
    if args.picture == "curves":
        from keras_alexnet.figures.curves import write_curves

        return write_curves(args.log, args.output)
    if not args.checkpoint.exists():
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint or model directory")
    from keras_alexnet.checkpoints import load_model

    model = load_model(args.checkpoint, compile=False)
    if args.picture == "kernels":
        from keras_alexnet.figures.kernels import write_kernels

        return write_kernels(model, args.output, args.columns, args.scale)
    if args.picture == "predictions":
        from keras_alexnet.figures.predictions import write_predictions

        return write_predictions(model, args.data_dir, args.output, args.split, args.count,
                                 args.start, args.columns)
    from keras_alexnet.figures.neighbours import write_neighbours

    index = args.index or default_index_dir(args.checkpoint, args.index_split)
    return write_neighbours(model, args.data_dir, args.output, index, args.split, args.count,
                            args.start, args.k, args.index_split, args.rebuild_index)


def run(args: argparse.Namespace) -> int:
    path = draw(args)
    print(path)
    return 0
