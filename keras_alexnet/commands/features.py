"""fc7 features of images (the paper's retrieval feature) into a .npy, their paths beside it.

The paper finds an image's neighbours by the Euclidean distance of fc7's 4096
activations [paper §6.1, Figure 4].  Each image is made into the network's input by the
model's input contract, as `predict` does: rescaled so its shorter side is the
contract's resize size, the centre crop, minus the training mean, in the weights'
channel order.

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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from keras_alexnet.commands import add_epoch_argument, chosen_checkpoints, require_checkpoints
from keras_alexnet.errors import AlexNetError
from tfrecords_tools.base.cli import require_paths
from tfrecords_tools.base.words import count

#: What a directory's images end with (compared lower-cased).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


def find_images(arguments: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files the arguments name, in their order, each directory's sorted."""
    found = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            images = sorted(_directory_images(argument))
            if not images:
                raise AlexNetError(f"{argument}: no {', '.join(IMAGE_SUFFIXES)} files in it "
                                   f"or its subdirectories")
            found.extend(images)
        elif argument.is_file():
            found.append(argument)
        else:
            raise AlexNetError(f"{argument}: no such image file or directory")
    return found


def _directory_images(directory: Path) -> list[Path]:
    images = []
    for root, directories, files in os.walk(directory):  # links to directories: not followed
        directories[:] = [name for name in directories if not name.startswith(".")]
        images.extend(Path(root) / name for name in files
                      if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES))
    return images


def check(args: argparse.Namespace) -> None:
    require_checkpoints([args.source])
    require_paths(*args.images, what="image file or directory")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import tensorflow as tf

    from keras_alexnet import checkpoints
    from keras_alexnet.contract import contract_of, preprocess_input
    from keras_alexnet.model import fc7_features
    from keras_alexnet.preprocessing import decode_center_crop
    from tfrecords_tools.base.files import atomic_path, write_atomically
    from tfrecords_tools.base.progress import tqdm

    output = Path(args.output)
    if output.suffix != ".npy":
        raise AlexNetError(f"-o {output}: must end in .npy (the paths go beside it, in "
                           f"{output.with_suffix('.txt').name})")
    if args.batch_size < 1:
        raise AlexNetError(f"--batch-size must be at least 1, got {args.batch_size}")
    paths = find_images(args.images)
    model = checkpoints.load_model(chosen_checkpoints([args.source], args.epoch)[0],
                                   compile=False)
    contract = contract_of(model, args.data_dir, source=args.source)
    network = fc7_features(model)
    decode = tf.function(
        lambda encoded: decode_center_crop(encoded, model.input_shape[1],
                                           contract.resize_size),
        input_signature=[tf.TensorSpec([], tf.string)])

    rows, kept, skipped = [], [], 0
    with tqdm(total=len(paths), unit="image", desc="fc7 features",
              disable=len(paths) <= args.batch_size) as bar:
        for start in range(0, len(paths), args.batch_size):
            crops = []
            for path in paths[start:start + args.batch_size]:
                try:
                    crops.append(decode(tf.constant(path.read_bytes())))
                    kept.append(path)
                except (OSError, tf.errors.InvalidArgumentError) as error:
                    skipped += 1
                    tqdm.write(f"{path}: skipped, {_reason(error)}", file=sys.stderr)
                bar.update()
            if crops:
                images = preprocess_input(tf.stack(crops), contract)
                rows.append(network(images, training=False).numpy())
    if not kept:
        raise AlexNetError(f"none of the {len(paths)} images decodes (named above); "
                           f"nothing written")

    features = np.concatenate(rows).astype(np.float32)
    names = output.with_suffix(".txt")
    output.parent.mkdir(parents=True, exist_ok=True)  # -o feats/val.npy makes feats/
    with atomic_path(output) as partial, open(partial, "wb") as file:
        np.save(file, features)
    write_atomically(names, "".join(f"{path}\n" for path in kept))
    print(f"wrote the fc7 features of {count(len(kept), 'image')} ({features.shape[0]}x"
          f"{features.shape[1]} float32) to {output} and their paths to {names}"
          + (f"; skipped {skipped} that did not decode (named above)" if skipped else ""))
    return 1 if skipped else 0


def _reason(error: Exception) -> str:
    """Why an image file was not read: the OS's reason, or the decoder's refusal."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    from serving.errors import decoder_refusal

    return decoder_refusal(error.message) or "not a decodable JPEG or PNG image"
