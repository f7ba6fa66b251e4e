"""The input pipeline: crops, reflections, PCA lighting, test patches, bad shards."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet import data
from keras_alexnet.preprocessing import decode_center_crop
from tests.fakes import write_fake_stats
from tests.keras_alexnet.training_helpers import make_dataset
from tfrecords_tools.dataset import DatasetInfo
from tfrecords_tools.schema import ImageRecord, serialize, shard_name
from tfrecords_tools.stats import load_stats

SIZE, RESIZE = 64, 73  # the reduced model's crop of the shared 73x73 shards


def pattern(height, width):
    """Smooth and unique everywhere: every window and its reflection differ."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([3 * x, 3 * y, 128 + 60 * np.sin(x * y / 300)], axis=-1)
    return np.clip(image, 0, 255).astype(np.uint8)


def lossless_jpeg(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


def write_shard(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def one_image_dir(directory, pixels, copies=64):
    """A train split of `copies` records of the same image, with stats.json."""
    directory.mkdir()
    encoded = lossless_jpeg(pixels)
    height, width = pixels.shape[:2]
    write_shard(directory / shard_name("train", 0, 1),
                [serialize(ImageRecord(encoded, height, width, f"{i}.JPEG", 0))
                 for i in range(copies)])
    write_fake_stats(directory)
    return directory, encoded


def training_images(directory, lighting_stddev, batches=2):
    dataset = data.training_dataset(directory, SIZE, 64, num_classes=1, seed=3,
                                    deterministic=True, lighting_stddev=lighting_stddev)
    stats = load_stats(directory)
    images = np.concatenate([x.numpy() for x, _ in dataset.take(batches)])
    return images + stats.mean_rgb * 255.0  # back to 0-255 pixels


def locate(crop, square):
    """(top, left, reflected, mean abs difference) of the best-matching window."""
    side = square.shape[0]
    best = None
    for top in range(side - SIZE + 1):
        for left in range(side - SIZE + 1):
            window = square[top:top + SIZE, left:left + SIZE]
            for reflected, candidate in ((False, window), (True, window[:, ::-1])):
                error = np.abs(candidate - crop).mean()
                if best is None or error < best[3]:
                    best = (top, left, reflected, error)
    return best


@pytest.fixture(scope="module")
def square_dir(tmp_path_factory):
    return one_image_dir(tmp_path_factory.mktemp("data") / "square", pattern(RESIZE, RESIZE))


def test_training_crops_lie_inside_the_image_and_are_reflected_half_the_time(square_dir):
    directory, encoded = square_dir
    full = tf.io.decode_jpeg(encoded).numpy().astype(np.float32)
    found = [locate(crop, full) for crop in training_images(directory, lighting_stddev=0)]
    assert max(error for *_, error in found) < 1.0  # each output is one window, exactly
    tops, lefts, reflected = ({f[i] for f in found} for i in range(3))
    assert tops == lefts == set(range(RESIZE - SIZE + 1))  # uniform over all offsets
    assert reflected == {False, True}
    assert 0.3 < np.mean([f[2] for f in found]) < 0.7


def test_larger_images_are_rescaled_before_cropping(tmp_path):
    pixels = pattern(110, 150)
    directory, encoded = one_image_dir(tmp_path / "large", pixels, copies=16)
    square = decode_center_crop(encoded, RESIZE, RESIZE).numpy()
    dataset = data.training_dataset(directory, SIZE, 16, num_classes=1, seed=1,
                                    lighting_stddev=0)
    images = next(iter(dataset))[0].numpy() + load_stats(directory).mean_rgb * 255.0
    assert max(locate(crop, square)[3] for crop in images) < 1.0


def test_pca_lighting_adds_eigvec_times_alpha_eigval_per_image(square_dir):
    directory, _ = square_dir
    stats = load_stats(directory)
    shifts = training_images(directory, 0.1) - training_images(directory, 0)
    per_image = shifts.mean(axis=(1, 2))  # (N, 3)
    # One colour shift per image, the same at every pixel.
    np.testing.assert_allclose(shifts - per_image[:, None, None, :], 0, atol=1e-3)
    # shift = 255 * eigvec @ (alpha * eigval): recover alpha, which must be N(0, 0.1).
    alpha = np.linalg.solve(255.0 * stats.eigvec, per_image.T).T / stats.eigval
    assert len(np.unique(alpha[:, 0].round(6))) == len(alpha)  # drawn per image
    assert np.all(np.abs(alpha.mean(axis=0)) < 0.035)
    assert np.all((alpha.std(axis=0) > 0.075) & (alpha.std(axis=0) < 0.125))
    np.testing.assert_allclose(data.lighting_shift(tf.constant(alpha[0]), stats).numpy(),
                               per_image[0], atol=1e-3)


def test_ten_patches_are_the_corners_the_centre_and_their_reflections():
    square = tf.reshape(tf.range(RESIZE * RESIZE * 3, dtype=tf.float32), (RESIZE, RESIZE, 3))
    patches = data.ten_patches(square, SIZE).numpy()
    square = square.numpy()
    far, mid = RESIZE - SIZE, (RESIZE - SIZE) // 2
    expected = [square[:SIZE, :SIZE], square[:SIZE, far:], square[far:, :SIZE],
                square[far:, far:], square[mid:mid + SIZE, mid:mid + SIZE]]
    assert patches.shape == (10, SIZE, SIZE, 3)
    for i, patch in enumerate(expected):
        np.testing.assert_array_equal(patches[i], patch)
        np.testing.assert_array_equal(patches[5 + i], patch[:, ::-1])


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "small", train_per_class=8,
                        validation_per_class=4)


def test_the_fifth_test_patch_is_the_centre_crop(small_dataset):
    center = data.evaluation_dataset(small_dataset, SIZE, 8, num_classes=4)
    ten = data.evaluation_dataset(small_dataset, SIZE, 8, num_classes=4, crops="ten")
    for (c, c_labels), (t, t_labels) in zip(center, ten, strict=True):
        assert t.shape[1:] == (10, SIZE, SIZE, 3)
        np.testing.assert_array_equal(c_labels, t_labels)
        np.testing.assert_allclose(c.numpy(), t[:, 4].numpy(), atol=1e-4)


def test_per_pixel_mean_subtracts_the_mean_image_window(small_dataset, tmp_path):
    mean_image = np.random.default_rng(0).uniform(0, 1, (RESIZE, RESIZE, 3)).astype(np.float32)
    np.save(small_dataset / "mean_image.npy", mean_image)
    try:
        pixel = next(iter(data.evaluation_dataset(small_dataset, SIZE, 4, num_classes=4,
                                                  mean="pixel")))[0].numpy()
    finally:
        (small_dataset / "mean_image.npy").unlink()
    channel = next(iter(data.evaluation_dataset(small_dataset, SIZE, 4, num_classes=4)))[0]
    pixels = channel.numpy() + load_stats(small_dataset).mean_rgb * 255.0
    offset = (RESIZE - SIZE) // 2
    window = 255.0 * mean_image[offset:offset + SIZE, offset:offset + SIZE]
    np.testing.assert_allclose(pixel, pixels - window, atol=1e-3)


def test_a_resumed_stream_continues_where_the_last_run_left_off(small_dataset):
    def stream(seed=5, first_batch=0):
        return data.training_dataset(small_dataset, SIZE, 8, num_classes=4, seed=seed,
                                     deterministic=True, first_batch=first_batch,
                                     batches_per_epoch=4)

    # 32 training images: 4 batches an epoch.  A run resumed after k batches sees what
    # an uninterrupted run sees from its batch k on, at an epoch boundary or within one.
    uninterrupted = [(x.numpy(), y.numpy()) for x, y in stream().take(10)]
    for first_batch in (4, 6):
        for (x, y), (rx, ry) in zip(uninterrupted[first_batch:],
                                    stream(first_batch=first_batch).take(10 - first_batch),
                                    strict=True):
            np.testing.assert_array_equal(x, rx.numpy())
            np.testing.assert_array_equal(y, ry.numpy())
    assert not np.array_equal(uninterrupted[0][0], uninterrupted[4][0])  # epochs differ
    assert not np.array_equal(next(iter(stream(seed=6)))[0].numpy(), uninterrupted[0][0])


# --- bad input ----------------------------------------------------------------------------

def test_missing_and_empty_data_directories_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'} does not exist"):
        DatasetInfo(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no train shards"):
        DatasetInfo(tmp_path).shards("train")


def example(**features):
    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(
        feature={key.replace("__", "/"): feature(v) for key, v in features.items()})
    ).SerializeToString()


@pytest.mark.parametrize("records, message", [
    ([example(image__raw=b"pixels")], r"no 'image/encoded' feature \(keys: \['image/raw'\]\)"),
    ([example(image__encoded=b"x")], r"no 'image/class/label' \(unlabeled split\?\)"),
    ([example(image__encoded=b"x", image__class__label=4)],
     r"'image/class/label' 4 is outside the 4 classes"),
    (None, "not a TFRecord file"),
])
def test_bad_shards_are_named_with_the_field(tmp_path, records, message):
    path = tmp_path / shard_name("train", 0, 1)
    if records is None:
        path.write_bytes(b"this is not a TFRecord file at all")
    else:
        write_shard(path, records)
    with pytest.raises(ValueError, match=f"{path}: .*{message}"):
        data.check_shards(DatasetInfo(tmp_path), "train", num_classes=4)


def test_a_bad_label_deep_in_a_shard_stops_the_pipeline_naming_the_shard(tmp_path):
    good = lossless_jpeg(pattern(RESIZE, RESIZE))
    path = tmp_path / shard_name("train", 0, 1)
    write_shard(path, [serialize(ImageRecord(good, RESIZE, RESIZE, "a.JPEG", label))
                       for label in (0, 1, 2, 9)])
    data.check_shards(DatasetInfo(tmp_path), "train", num_classes=4)  # the first is fine
    dataset = data.training_dataset(tmp_path, SIZE, 4, num_classes=4, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{path}: image/class/label is 9, expected 0 <= label < 4"):
        next(iter(dataset))


def test_the_converters_shards_feed_training_and_evaluation(converted_shards):
    """The shared fixture: tfrecords_tools output with manifest.json and mean_image.npy."""
    info = DatasetInfo(converted_shards)
    for split in ("train", "validation"):
        read = sum(1 for path in sorted(converted_shards.glob(f"{split}-*"))
                   for _ in tf.data.TFRecordDataset(str(path)))
        assert info.records(split) == read  # from manifest.json
    num_classes = len((converted_shards / "labels.txt").read_text().splitlines())
    data.check_shards(info, "train", num_classes)
    images, labels = next(iter(data.training_dataset(
        converted_shards, SIZE, 16, num_classes=num_classes, mean="pixel", seed=0)))
    assert images.shape == (16, SIZE, SIZE, 3) and np.isfinite(images.numpy()).all()
    assert set(labels.numpy()) <= set(range(num_classes))
    patches, _ = next(iter(data.evaluation_dataset(
        converted_shards, SIZE, 4, num_classes=num_classes, crops="ten", mean="pixel")))
    assert patches.shape == (4, 10, SIZE, SIZE, 3)
