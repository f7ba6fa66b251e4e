import io
import json

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_alexnet.data import random_crop
from tfrecords_tools import schema
from tfrecords_tools.stats import compute_stats, load_stats


def _encoded(directory):
    files = sorted(str(p) for p in directory.glob(schema.shard_pattern("train")))
    return [tf.io.parse_single_example(r, schema.FEATURES)["image/encoded"]
            for r in tf.data.TFRecordDataset(files)]


def _train_pixels(directory):
    """The images as the training pipeline decodes them: `random_crop` with the crop as
    large as the image, in shard order, on the [0, 1] scale."""
    return np.stack([random_crop(image, 73, 73, tf.zeros(2))[0].numpy()
                     for image in _encoded(directory)]).astype(np.float64) / 255.0


def test_stats_are_those_of_the_pixels_training_decodes(converted_shards):
    stats = json.loads((converted_shards / "stats.json").read_text())
    trained_on = _train_pixels(converted_shards).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(stats["mean_rgb"], trained_on, atol=1e-6)
    # Another IDCT (PIL's accurate one) gives other pixels: the statistics would be off.
    pil = np.stack([np.asarray(Image.open(io.BytesIO(image.numpy())), np.float64)
                    for image in _encoded(converted_shards)]).mean(axis=(0, 1, 2)) / 255.0
    assert np.max(np.abs(pil - trained_on)) > 1e-4


def test_stats_match_a_direct_computation(converted_shards):
    stats = json.loads((converted_shards / "stats.json").read_text())
    images = _train_pixels(converted_shards)
    assert stats["pixel_scale"] == 1.0 and stats["num_images"] == len(images) == 297
    np.testing.assert_allclose(stats["mean_rgb"], images.mean(axis=(0, 1, 2)), atol=1e-6)
    covariance = np.cov(images.reshape(-1, 3), rowvar=False)
    eigval, eigvec = np.array(stats["eigval"]), np.array(stats["eigvec"])
    assert list(eigval) == sorted(eigval, reverse=True)
    np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-6)
    # Column i is the eigenvector of eigval[i] [paper §4.1].
    np.testing.assert_allclose(covariance @ eigvec, eigvec * eigval, atol=5e-4)
    loaded = load_stats(converted_shards)
    assert loaded.mean_image.shape == (73, 73, 3) and loaded.mean_image.dtype == np.float32
    np.testing.assert_allclose(loaded.mean_image, images.mean(axis=0), atol=1e-6)


def test_sample_of_n_images(converted_shards, tmp_path):
    for path in converted_shards.glob("train-*"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    stats = compute_stats(tmp_path, sample=40, progress=False)
    first_40 = _train_pixels(tmp_path)[:40]
    assert stats["num_images"] == 40
    np.testing.assert_allclose(stats["mean_rgb"], first_40.mean(axis=(0, 1, 2)), atol=1e-6)
