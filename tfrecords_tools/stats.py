"""Training-set pixel statistics: the per-pixel mean image subtracted from the inputs
[paper §2] and the RGB covariance eigen-decomposition of the PCA lighting augmentation
[paper §4.1].

Written next to the shards as `stats.json` and `mean_image.npy`, on the [0, 1] pixel
scale, and read back by `load_stats`: the writer and the reader of the two files live
here, beside the decoder whose pixels they describe.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import tensorflow as tf

from tfrecords_tools import schema
from tfrecords_tools.base import storage
from tfrecords_tools.errors import DatasetError

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


def load_stats(data_dir: str | storage.PathOrUrl) -> ImageStats:
    """Reads `stats.json` (and `mean_image.npy` if present) from a shard directory.

    Falls back to the ImageNet values when the directory has no `stats.json`.
    """
    data_dir = storage.path(data_dir)
    path = data_dir / schema.STATS
    if not path.exists():
        return ImageStats.imagenet()
    try:
        stats = json.loads(path.read_text())
        values = ImageStats(np.array(stats["mean_rgb"], np.float32).reshape(3),
                            np.array(stats["eigval"], np.float32).reshape(3),
                            np.array(stats["eigvec"], np.float32).reshape(3, 3))
    except (ValueError, KeyError) as error:
        raise DatasetError(f"{path}: not a valid stats file ({error!r}); regenerate it with "
                           f"`python -m tfrecords_tools stats`") from error
    if stats.get("pixel_scale", 1.0) != 1.0:
        raise DatasetError(f"{path}: pixel_scale must be 1.0, got {stats['pixel_scale']}")
    mean_image_path = data_dir / schema.MEAN_IMAGE
    if mean_image_path.exists():
        values = dataclasses.replace(values, mean_image=np.load(
            io.BytesIO(mean_image_path.read_bytes())))
    return values


def decode_jpeg_window(image_bytes: tf.Tensor, top: tf.Tensor, left: tf.Tensor, size: int
                       ) -> tf.Tensor:
    """The uint8 RGB `size` x `size` window of a JPEG at (`top`, `left`), decoding only it.

    The training crops' decoder [paper §4.1], with TensorFlow's default (fast) IDCT;
    `compute_stats` decodes with it too, so the mean subtracted is the mean of
    the pixels the network is trained on.
    """
    return tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([top, left, size, size]),
                                         channels=3)


def _images(files: list[str], sample: int | None, size: int):
    """Decoded training images on the [0, 1] scale, centre-cropped to size x size (a no-op
    for the default cropped shards), in shard order; decoding runs on every core."""
    def decode(serialized):
        image_bytes = tf.io.parse_single_example(serialized, schema.FEATURES)["image/encoded"]
        shape = tf.image.extract_jpeg_shape(image_bytes)
        top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
        # The training crops' decoder: another IDCT (PIL's, TensorFlow's accurate one)
        # gives means up to ~1 level away from the pixels the network sees.
        image = decode_jpeg_window(image_bytes, top, left, size)
        return tf.cast(image, tf.float32) / 255.0

    dataset = tf.data.TFRecordDataset(files)
    if sample:
        dataset = dataset.take(sample)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(64).prefetch(2).as_numpy_iterator()


def _first_image_size(path: str) -> int:
    for serialized in tf.data.TFRecordDataset(path).take(1):
        example = tf.io.parse_single_example(serialized, schema.FEATURES)
        return int(min(example["image/height"], example["image/width"]))
    raise DatasetError(f"{path}: an empty training shard")


def compute_stats(output: str | storage.PathOrUrl, sample: int | None = None,
                  progress: bool = True) -> dict:
    """Computes and writes `stats.json` and `mean_image.npy` from the training shards.

    `sample` limits the statistics to the first N images in shard order (the shards are
    already shuffled, so these are a random sample of every class).
    """
    from tfrecords_tools.base.progress import tqdm

    output = storage.path(output)
    files = sorted(str(p) for p in output.glob(schema.shard_pattern("train")))
    if not files:
        raise FileNotFoundError(f"{output}: no training shards ({schema.shard_pattern('train')})")
    size = _first_image_size(files[0])
    manifest = output / schema.MANIFEST
    total = (json.loads(manifest.read_text())["splits"].get("train", {}).get("records")
             if manifest.exists() else None)
    total = min(filter(None, (total, sample)), default=None)

    image_sum = np.zeros((size, size, 3), np.float64)
    second_moment = np.zeros((3, 3), np.float64)  # sum over pixels of x x^T
    count = 0
    with tqdm(total=total, unit="img", desc="stats", disable=not progress) as bar:
        for batch in _images(files, sample, size):
            image_sum += batch.sum(axis=0, dtype=np.float64)
            pixels = batch.reshape(-1, 3).astype(np.float64)
            second_moment += pixels.T @ pixels
            count += len(batch)
            bar.update(len(batch))
    mean_image = image_sum / count
    mean_rgb = mean_image.mean(axis=(0, 1))
    covariance = second_moment / (count * size * size) - np.outer(mean_rgb, mean_rgb)
    eigval, eigvec = np.linalg.eigh(covariance)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]  # descending, as [paper §4.1] orders p_i
    # An eigenvector's sign is arbitrary; fix it as in the published ImageNet values.
    eigvec = eigvec * np.where(eigvec.sum(axis=0) > 0, -1.0, 1.0)
    stats = {
        "pixel_scale": 1.0,
        "mean_rgb": mean_rgb.tolist(),
        "std_rgb": np.sqrt(np.diag(covariance)).tolist(),
        "eigval": eigval.tolist(),
        "eigvec": eigvec.tolist(),  # column i belongs to eigval[i]; rows are R, G, B
        "num_images": count,
        "image_size": [size, size],
    }
    (output / schema.STATS).write_text(json.dumps(stats, indent=1) + "\n")
    buffer = io.BytesIO()
    np.save(buffer, mean_image.astype(np.float32))
    (output / schema.MEAN_IMAGE).write_bytes(buffer.getvalue())
    return stats
