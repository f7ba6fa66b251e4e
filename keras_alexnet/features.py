"""fc7 features of image files, the paper's retrieval feature [paper §6.1, Figure 4]:
`extract_features`, behind the `features` command.

Each image is made into the network's input by the model's input contract, as `predict`
does: rescaled so its shorter side is the contract's resize size, the centre crop,
minus the training mean, in the weights' channel order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet.contract import InputContract, contract_of, preprocess_input
from keras_alexnet.errors import AlexNetError
from keras_alexnet.model import fc7_features
from keras_alexnet.preprocessing import decode_center_crop
from tfrecords_tools.base.progress import tqdm

#: What a directory's images end with (compared lower-cased).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class Features:
    """fc7 of the images that decoded: `rows[i]` is `paths[i]`'s; `skipped` names the
    others with the reason."""

    rows: np.ndarray  # float32 (N, 4096 for the paper's network)
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def find_images(arguments: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files the arguments name, in their order: a file whatever its name, a
    directory's .jpg, .jpeg and .png files (any case) in it and all its subdirectories,
    sorted by path (hidden files and directories, and links to directories, left out)."""
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


def extract_features(model, images: Sequence[str | os.PathLike], *,
                     contract: InputContract | None = None, batch_size: int = 64,
                     progress: bool = True) -> Features:
    """fc7 of each image file in `images` (`find_images` expands directories) under
    `model` (a loaded AlexNet; `contract` defaults to the one it carries).  An image that
    does not decode is skipped and named; none decoding is an error."""
    if batch_size < 1:
        raise AlexNetError(f"batch size must be at least 1, got {batch_size}")
    paths = [Path(path) for path in images]
    contract = contract or contract_of(model)
    network = fc7_features(model)
    decode = tf.function(
        lambda encoded: decode_center_crop(encoded, model.input_shape[1],
                                           contract.resize_size),
        input_signature=[tf.TensorSpec([], tf.string)])
    rows, kept, skipped = [], [], []
    with tqdm(total=len(paths), unit="image", desc="fc7 features",
              disable=not progress or len(paths) <= batch_size) as bar:
        for start in range(0, len(paths), batch_size):
            crops = []
            for path in paths[start:start + batch_size]:
                try:
                    crops.append(decode(tf.constant(path.read_bytes())))
                    kept.append(path)
                except (OSError, tf.errors.InvalidArgumentError) as error:
                    skipped.append((path, _reason(error)))
                bar.update()
            if crops:
                inputs = preprocess_input(tf.stack(crops), contract)
                rows.append(network(inputs, training=False).numpy())
    if not kept:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
        raise AlexNetError(f"none of the {len(paths)} images decodes ({reasons}"
                           f"{'; ...' if len(skipped) > 3 else ''}); nothing written")
    return Features(np.concatenate(rows).astype(np.float32), kept, skipped)


def _reason(error: Exception) -> str:
    """Why an image file was not read: the OS's reason, or the decoder's refusal."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    from serving.errors import decoder_refusal

    return decoder_refusal(error.message) or "not a decodable JPEG or PNG image"
