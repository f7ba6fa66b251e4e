"""Image statistics and the deterministic preprocessing shared by evaluation and export.

Pixel convention: the network sees RGB on the 0-255 scale minus the training mean
[paper §2].  `stats.json` (written by `python -m tfrecords_tools stats`) holds its
statistics on the [0, 1] scale ("pixel_scale": 1.0), the scale of the ImageNet PCA
values commonly quoted for the paper's lighting augmentation [paper §4.1].
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfrecords_tools.schema import MEAN_IMAGE, STATS

RESIZE_SIZE = 256  # images are rescaled so that the shorter side is 256 [paper §2]
PAPER_IMAGE_SIZE = 224

# ImageNet RGB statistics on the [0, 1] scale, used when a dataset has no stats.json.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),   # rows are R, G, B; columns are the
                   (-0.5808, -0.0045, -0.8140),  # eigenvectors p1, p2, p3
                   (-0.5836, -0.6948, 0.4203))


@dataclasses.dataclass(frozen=True)
class ImageStats:
    """Training-set pixel statistics on the [0, 1] scale."""

    mean_rgb: np.ndarray  # (3,)
    eigval: np.ndarray  # (3,), covariance eigenvalues, descending
    eigvec: np.ndarray  # (3, 3), column i is the eigenvector of eigval[i]
    mean_image: np.ndarray | None = None  # (H, W, 3), the paper's per-pixel mean

    @classmethod
    def imagenet(cls) -> ImageStats:
        return cls(np.array(IMAGENET_MEAN_RGB, np.float32), np.array(IMAGENET_EIGVAL, np.float32),
                   np.array(IMAGENET_EIGVEC, np.float32))


def load_stats(data_dir: str | Path) -> ImageStats:
    """Reads `stats.json` (and `mean_image.npy` if present) from a shard directory.

    Falls back to the ImageNet values when the directory has no `stats.json`.
    """
    data_dir = Path(data_dir)
    path = data_dir / STATS
    if not path.exists():
        return ImageStats.imagenet()
    try:
        stats = json.loads(path.read_text())
        values = ImageStats(np.array(stats["mean_rgb"], np.float32).reshape(3),
                            np.array(stats["eigval"], np.float32).reshape(3),
                            np.array(stats["eigvec"], np.float32).reshape(3, 3))
    except (ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a valid stats file ({error!r}); regenerate it with "
                         f"`python -m tfrecords_tools stats`") from None
    if stats.get("pixel_scale", 1.0) != 1.0:
        raise ValueError(f"{path}: pixel_scale must be 1.0, got {stats['pixel_scale']}")
    mean_image_path = data_dir / MEAN_IMAGE
    if mean_image_path.exists():
        values = dataclasses.replace(values, mean_image=np.load(mean_image_path))
    return values


def resize_size_for(image_size: int) -> int:
    """The shorter-side size that keeps the paper's 224/256 crop ratio for other inputs."""
    return round(image_size * RESIZE_SIZE / PAPER_IMAGE_SIZE)


def decode_center_crop(image_bytes: tf.Tensor, image_size: int,
                       resize_size: int | None = None) -> tf.Tensor:
    """Encoded JPEG/PNG of any size -> float32 (image_size, image_size, 3), 0-255.

    Rescales so the shorter side is `resize_size` (skipped when it already is, as for
    the converter's 256x256 shards) and takes the central patch [paper §2, §4.1].
    """
    resize_size = resize_size or resize_size_for(image_size)
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    shorter = tf.minimum(height, width)

    def rescale():
        scale = resize_size / tf.cast(shorter, tf.float32)
        size = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale),
                       tf.int32)
        return tf.image.resize(image, tf.maximum(size, resize_size), antialias=True)

    image = tf.cond(tf.equal(shorter, resize_size), lambda: image, rescale)
    shape = tf.shape(image)
    top = (shape[0] - image_size) // 2
    left = (shape[1] - image_size) // 2
    return tf.ensure_shape(image[top:top + image_size, left:left + image_size, :],
                           (image_size, image_size, 3))


def decode_jpeg_window(image_bytes: tf.Tensor, top: tf.Tensor, left: tf.Tensor, size: int
                       ) -> tf.Tensor:
    """The uint8 RGB `size` x `size` window of a JPEG at (`top`, `left`), decoding only it.

    The training crops' decoder [paper §4.1], with TensorFlow's default (fast) IDCT;
    `tfrecords_tools stats` decodes with it too, so the mean subtracted is the mean of
    the pixels the network is trained on.
    """
    return tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([top, left, size, size]),
                                         channels=3)


def subtract_mean(images: tf.Tensor, stats: ImageStats) -> tf.Tensor:
    """0-255 RGB images minus the per-channel training mean."""
    return images - tf.constant(stats.mean_rgb * 255.0, tf.float32)
