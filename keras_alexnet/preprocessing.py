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
#: The most pixels an image may have once decoded (a JPEG at its reduced DCT scale):
#: 8.4 million (4096x2048), about 25 MB as uint8 and 100 MB as float32 while it is
#: rescaled.  A 10000x10000 JPEG decodes at 1/8 scale (1250x1250); larger images, and
#: PNGs above the limit, are refused naming their size.
MAX_DECODED_PIXELS = 1 << 23
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DCT_SCALES = (1, 2, 4, 8)  # libjpeg's reduced IDCT sizes

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


def _refuse(message: tf.Tensor) -> tf.Tensor:
    with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
        return tf.zeros((0, 0, 3), tf.uint8)


def decode_bounded(image_bytes: tf.Tensor, resize_size: int) -> tf.Tensor:
    """An encoded JPEG or PNG -> uint8 RGB (H, W, 3), at a bounded cost in memory.

    The size is read from the header first.  A JPEG whose shorter side is at least
    twice `resize_size` decodes at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the
    shorter side at least `resize_size`, so it is never decoded larger than needed;
    an image still above `MAX_DECODED_PIXELS` is refused with InvalidArgumentError
    naming its size and the limit, as is anything but a JPEG or a PNG.
    """
    def too_large(kind, height, width, scale):
        return tf.strings.format(
            kind + " of {}x{} pixels (width x height) decoded at 1/{} scale is over the limit "
            f"of {MAX_DECODED_PIXELS:,} pixels; send a smaller image", (width, height, scale))

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        height, width = shape[0], shape[1]
        shorter = tf.minimum(height, width)
        index = tf.add_n([tf.cast(shorter // scale >= resize_size, tf.int32)
                          for scale in _DCT_SCALES[1:]])
        scale = tf.gather(_DCT_SCALES, index)
        pixels = tf.cast((height + scale - 1) // scale, tf.int64) * \
            tf.cast((width + scale - 1) // scale, tf.int64)
        return tf.cond(
            pixels > MAX_DECODED_PIXELS, lambda: _refuse(too_large("JPEG", height, width, scale)),
            lambda: tf.switch_case(index, [
                lambda scale=scale: tf.io.decode_jpeg(image_bytes, channels=3, ratio=scale)
                for scale in _DCT_SCALES]))

    def png():
        # IHDR: width and height, big-endian, at bytes 16-23.
        header = tf.cast(tf.io.decode_raw(tf.strings.substr(image_bytes, 16, 8), tf.uint8),
                         tf.int64)
        width = tf.reduce_sum(header[:4] * [1 << 24, 1 << 16, 1 << 8, 1])
        height = tf.reduce_sum(header[4:] * [1 << 24, 1 << 16, 1 << 8, 1])
        return tf.cond(width * height > MAX_DECODED_PIXELS,
                       lambda: _refuse(too_large("PNG", height, width, 1)),
                       lambda: tf.io.decode_png(image_bytes, channels=3))

    is_png = tf.logical_and(tf.strings.length(image_bytes) >= 24,
                            tf.strings.substr(image_bytes, 0, 8) == _PNG_SIGNATURE)
    return tf.case([(tf.io.is_jpeg(image_bytes), jpeg), (is_png, png)],
                   default=lambda: _refuse(tf.constant("not a JPEG or PNG image")),
                   exclusive=False)


def decode_center_crop(image_bytes: tf.Tensor, image_size: int,
                       resize_size: int | None = None) -> tf.Tensor:
    """Encoded JPEG/PNG of any size -> float32 (image_size, image_size, 3), 0-255.

    Decodes with `decode_bounded`, rescales so the shorter side is `resize_size`
    (skipped when it already is, as for the converter's 256x256 shards) and takes the
    central patch [paper §2, §4.1].
    """
    resize_size = resize_size or resize_size_for(image_size)
    image = tf.cast(decode_bounded(image_bytes, resize_size), tf.float32)
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
