"""The deterministic preprocessing shared by evaluation and export: a bounded decode,
the shorter-side rescale and the centre crop [paper §2].

Pixel convention: the network sees RGB on the 0-255 scale minus the training mean
[paper §2]; the statistics themselves are `tfrecords_tools.stats`'s.
"""

from __future__ import annotations

import tensorflow as tf

RESIZE_SIZE = 256  # images are rescaled so that the shorter side is 256 [paper §2]
PAPER_IMAGE_SIZE = 224
#: The most pixels an image may have once decoded (a JPEG at its reduced DCT scale):
#: 8.4 million (4096x2048), about 25 MB as uint8 and 100 MB as float32 while it is
#: rescaled.  A 10000x10000 JPEG decodes at 1/8 scale (1250x1250); larger images, and
#: PNGs above the limit, are refused naming their size.
MAX_DECODED_PIXELS = 1 << 23
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DCT_SCALES = (1, 2, 4, 8)  # libjpeg's reduced IDCT sizes

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
    naming its size and the limit, as is anything but a JPEG or a PNG (a GIF by name).
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
    # GIFs are refused by name: the converter takes them for training (their first
    # frame), but an animated one decodes every frame here, unbounded.
    is_gif = tf.strings.substr(image_bytes, 0, 4) == "GIF8"
    return tf.case([(tf.io.is_jpeg(image_bytes), jpeg), (is_png, png),
                    (is_gif, lambda: _refuse(tf.constant(
                        "a GIF, not a JPEG or PNG image; convert it to PNG first")))],
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
