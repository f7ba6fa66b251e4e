"""fc7 features of images (the paper's retrieval feature) into a .npy, their paths beside it
(`keras_alexnet.features.extract_features`).

The paper finds an image's neighbours by the Euclidean distance of fc7's 4096
activations [paper §6.1, Figure 4].

RUN is a training run's model directory (its latest checkpoint), a .keras checkpoint,
or weights known by name (bvlc_alexnet, downloaded once).  Each IMAGE_OR_DIR is an
image file, read whatever its name, or a directory: its .jpg, .jpeg and .png files
(any case) in it and all its subdirectories, hidden files and directories and links to
directories left out, sorted by path.

Writes OUTPUT (default features.npy): float32 (N, 4096 for the paper's network), a row
per image; and beside it OUTPUT with .txt (features.txt): the N image paths, one a
line, in the same order.  An image that does not decode is skipped, named on stderr
with the reason, and has no row; the summary line counts them and the exit status is
1, so a script sees that images were left out.  When nothing decodes: an error, and
nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_alexnet.commands import add_epoch_argument, chosen_checkpoints, require_checkpoints
from keras_alexnet.errors import AlexNetError
from tfrecords_tools.base.cli import require_paths
from tfrecords_tools.base.words import count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Not `run`: that name is the command's function (`keras_alexnet.commands`).
    parser.add_argument("source", metavar="RUN",
                        help="a training run's model directory, a .keras checkpoint or "
                             "weights by name (bvlc_alexnet)")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                        help="JPEG or PNG files, or directories of them")
    parser.add_argument("-o", "--output", default="features.npy",
                        help="the .npy to write; the paths go beside it in a .txt "
                             "(default: features.npy, features.txt)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per forward pass (default: 64)")
    parser.add_argument("--data-dir",
                        help="only for a checkpoint saved without its input contract: the "
                             "shard directory it was trained on")
    add_epoch_argument(parser)


def check(args: argparse.Namespace) -> None:
    require_checkpoints([args.source])
    require_paths(*args.images, what="image file or directory")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_alexnet import checkpoints
    from keras_alexnet.contract import contract_of
    from keras_alexnet.features import extract_features, find_images
    from tfrecords_tools.base.files import atomic_path, write_atomically

    output = Path(args.output)
    if output.suffix != ".npy":
        raise AlexNetError(f"-o {output}: must end in .npy (the paths go beside it, in "
                           f"{output.with_suffix('.txt').name})")
    if args.batch_size < 1:
        raise AlexNetError(f"--batch-size must be at least 1, got {args.batch_size}")
    paths = find_images(args.images)
    model = checkpoints.load_model(chosen_checkpoints([args.source], args.epoch)[0],
                                   compile=False)
    found = extract_features(model, paths, batch_size=args.batch_size,
                             contract=contract_of(model, args.data_dir, source=args.source))
    for path, reason in found.skipped:
        print(f"{path}: skipped, {reason}", file=sys.stderr)
    names = output.with_suffix(".txt")
    output.parent.mkdir(parents=True, exist_ok=True)  # -o feats/val.npy makes feats/
    with atomic_path(output) as partial, open(partial, "wb") as file:
        np.save(file, found.rows)
    write_atomically(names, "".join(f"{path}\n" for path in found.paths))
    skipped = len(found.skipped)
    print(f"wrote the fc7 features of {count(len(found.paths), 'image')} ("
          f"{found.rows.shape[0]}x{found.rows.shape[1]} float32) to {output} and their paths "
          f"to {names}" + (f"; skipped {skipped} that did not decode (named above)"
                           if skipped else ""))
    return 1 if skipped else 0
