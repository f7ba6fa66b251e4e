"""The input pipeline: converter shards to augmented training batches and test patches.

Training [paper §4.1]: random `image_size` crops of the 256x256 images (fused with the
JPEG decode, so only the crop is decoded), horizontal reflections, the PCA lighting
shift drawn once per image, and mean subtraction [paper §2].  Test time: the centre
crop, or the paper's ten patches (four corners, centre, and their reflections).

The shards are the converter's, or a TFDS prepared dataset's: `DatasetInfo.keys` names
the Example keys of the image and the label, `DatasetInfo.label_offset` the label
convention; the labels come out 0-based either way.

Every training epoch is its own `tf.data` pipeline seeded by `(seed, epoch)`, and
every image's augmentation by its place in the epoch: a run resumed after k batches
sees the same images in the same order, augmented the same way, as a run that never
stopped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet.config import TrainingOptions
from keras_alexnet.contract import InputContract
from keras_alexnet.errors import AlexNetError
from keras_alexnet.preprocessing import decode_center_crop
from tfrecords_tools import schema
from tfrecords_tools.dataset import DatasetInfo
from tfrecords_tools.schema import KEYS, UNLABELED, RecordKeys
from tfrecords_tools.stats import ImageStats, decode_jpeg_window

NUM_TEST_PATCHES = 10  # [paper §4.1]
AUTOTUNE = tf.data.AUTOTUNE


# --- shards ------------------------------------------------------------------------------

def check_shards(dataset: DatasetInfo, split: str, num_classes: int | None = None) -> None:
    """Reads the first record of every shard of `split` and checks the features training
    needs.

    Catches the common mistakes (shards of another format, unlabeled splits, a class
    count that does not match the model) before any training; the pipeline also checks
    each label as it reads it.
    """
    keys = dataset.keys
    # What fixes the label convention: our manifest's label_offset, or TFDS's ClassLabel.
    convention = dataset.labels_path if dataset.prepared else dataset.path / schema.MANIFEST
    for shard in dataset.shards(split):
        try:
            first = next(iter(tf.data.TFRecordDataset(str(shard)).take(1)), None)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise AlexNetError(f"{shard}: not a TFRecord file ({error.message})") from error
        if first is None:
            continue  # an empty shard is legal (more shards than images)
        try:
            example = tf.train.Example.FromString(first.numpy())
        except Exception as error:  # protobuf's DecodeError
            raise AlexNetError(f"{shard}: first record is not a tf.train.Example "
                               f"({error})") from error
        feature = example.features.feature
        if keys.image not in feature or not feature[keys.image].bytes_list.value:
            raise AlexNetError(f"{shard}: records have no {keys.image!r} feature (keys: "
                               f"{sorted(feature)})")
        if num_classes is None:
            continue
        labels = feature[keys.label].int64_list.value if keys.label in feature else []
        label = labels[0] if labels else UNLABELED
        if label == UNLABELED:
            raise AlexNetError(f"{shard}: records have no {keys.label!r} (unlabeled "
                               f"split?); training and evaluation need labels")
        offset = dataset.label_offset
        if not 0 <= label - offset < num_classes:
            raise AlexNetError(f"{shard}: {keys.label!r} {label} is outside the "
                               f"{num_classes} classes of the model (labels {offset}.."
                               f"{num_classes - 1 + offset}, the label convention of "
                               f"{convention})")


def _records(shards: Sequence[Path], *, shuffle_seed=None, deterministic: bool = True,
             input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """(serialized example, shard path) pairs, read from several shards at once."""
    files = tf.data.Dataset.from_tensor_slices([str(s) for s in shards])
    split_records = False
    if input_context and input_context.num_input_pipelines > 1:
        if len(shards) >= input_context.num_input_pipelines:
            files = files.shard(input_context.num_input_pipelines,
                                input_context.input_pipeline_id)
        else:
            split_records, deterministic = True, True  # each pipeline reads the same order
    if shuffle_seed is not None:
        files = files.shuffle(len(shards), seed=shuffle_seed)
    records = files.interleave(
        lambda path: tf.data.Dataset.zip(  # zip, not map: no function call per record
            tf.data.TFRecordDataset(path), tf.data.Dataset.from_tensors(path).repeat()),
        cycle_length=min(len(shards), 16), num_parallel_calls=AUTOTUNE,
        deterministic=deterministic)
    if split_records:
        records = records.shard(input_context.num_input_pipelines,
                                input_context.input_pipeline_id)
    return records


#: Only what training and evaluation read of our shards (parsing the text fields too
#: costs time).
IMAGE_AND_LABEL = KEYS.spec("image", "label")


def _parse(record: tf.Tensor, keys: RecordKeys,
           label_offset: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The image bytes and the 0-based label (shards written with `--label-offset 1`
    store label + 1)."""
    features = tf.io.parse_single_example(record, keys.spec("image", "label"))
    label = tf.cast(features[keys.label], tf.int32)
    return features[keys.image], label - label_offset


def _check_labels(labels: tf.Tensor, paths: tf.Tensor, num_classes: int,
                  key: str) -> tf.Tensor:
    """A batch's 0-based labels, or an error naming the shard and the Example `key` of the
    first one out of range."""
    bad = (labels < 0) | (labels >= num_classes)

    def fail():
        first = tf.argmax(tf.cast(bad, tf.int32))
        message = tf.strings.join([
            paths[first], f": {key} is ", tf.strings.as_string(labels[first]),
            f", expected 0 <= label < {num_classes} (the model's classes; -1 means "
            f"unlabeled)"])
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.identity(labels)

    return tf.cond(tf.reduce_any(bad), fail, lambda: labels)


# --- pixel statistics ----------------------------------------------------------------------

def lighting_shift(alpha: tf.Tensor, stats: ImageStats) -> tf.Tensor:
    """The PCA colour shift [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T on the 0-255 scale [paper §4.1].

    `alpha` is (3,) or a batch (N, 3); `stats` holds eigenvalues for [0, 1] pixels; the
    shift is the same for every pixel of an image.
    """
    # eigvec @ (alpha * eigval) = (eigvec * eigval) @ alpha: one constant, one product.
    scaled = tf.constant(255.0 * stats.eigvec * stats.eigval[None, :], tf.float32)
    return tf.linalg.matvec(scaled, tf.cast(alpha, tf.float32))


# --- training ------------------------------------------------------------------------------

def random_crop(image_bytes: tf.Tensor, size: int, resize_size: int, position: tf.Tensor):
    """A `size` x `size` crop; returns (uint8 crop, top, left).

    `position` holds two numbers in [0, 1) that place the crop uniformly.  Images whose
    shorter side is already `resize_size` (the converter's shards) are decoded only
    inside the crop window; others are first rescaled as at test time.
    """
    shape = tf.image.extract_jpeg_shape(image_bytes)
    height, width = shape[0], shape[1]

    def offsets(h, w):
        choices = tf.cast(tf.stack([h, w]) - size + 1, tf.float32)
        top_left = tf.cast(position * choices, tf.int32)
        return top_left[0], top_left[1]

    def fused():
        top, left = offsets(height, width)
        return decode_jpeg_window(image_bytes, top, left, size), top, left

    def rescaled():
        square = decode_center_crop(image_bytes, resize_size, resize_size)
        top, left = offsets(resize_size, resize_size)
        crop = tf.cast(tf.round(square[top:top + size, left:left + size]), tf.uint8)
        return crop, top, left

    crop, top, left = tf.cond(tf.minimum(height, width) == resize_size, fused, rescaled)
    return tf.ensure_shape(crop, (size, size, 3)), top, left


def augment(image_bytes: tf.Tensor, seed: tf.Tensor, *, image_size: int, resize_size: int,
            stats: ImageStats, contract: InputContract,
            lighting_stddev: float = TrainingOptions.lighting_stddev) -> tf.Tensor:
    """One training input [paper §4.1]: crop, reflection, lighting, mean subtraction.

    `seed` (two int64) decides everything, so the same seed gives the same input.  The
    crop is reflected while still uint8 and the colour shift joins the per-channel
    mean: three passes over the pixels after the decode.
    """
    uniform = tf.random.stateless_uniform([3], seed)  # crop position, reflection
    image, top, left = random_crop(image_bytes, image_size, resize_size, uniform[:2])
    shift = None
    if lighting_stddev:
        alpha = tf.random.stateless_normal([3], seed[::-1], stddev=lighting_stddev)
        shift = lighting_shift(alpha, stats)

    def reflect(pixels):
        return tf.cond(uniform[2] < 0.5, lambda: tf.reverse(pixels, axis=[1]), lambda: pixels)

    if contract.mean == "pixel":  # the mean window follows the crop, so reflect after it
        image = reflect(contract.subtract_mean(tf.cast(image, tf.float32), top, left, shift))
    else:
        image = contract.subtract_mean(tf.cast(reflect(image), tf.float32), shift=shift)
    return contract.to_network(image)


def training_dataset(data_dir: str | Path | DatasetInfo, image_size: int,
                     batch_size: int = TrainingOptions.batch_size, *,
                     num_classes: int, split: str = "train", stats: ImageStats | None = None,
                     mean: str = "channel",
                     lighting_stddev: float = TrainingOptions.lighting_stddev,
                     seed: int | None = None, first_batch: int = 0,
                     batches_per_epoch: int | None = None, deterministic: bool = True,
                     shuffle_buffer: int = 10_000,
                     input_context: tf.distribute.InputContext | None = None,
                     contract: InputContract | None = None) -> tf.data.Dataset:
    """Endless augmented (images, labels) batches, epoch after epoch.

    Args:
        data_dir: the converter's output (shards, optional stats.json / mean_image.npy),
            or its `DatasetInfo`.
        image_size: the model's input size (224 in the paper).
        batch_size: images per batch (per replica when `input_context` is given, as
            `distribute_datasets_from_function` expects); the partial last batch of
            each epoch is dropped.
        num_classes: labels must lie in [0, num_classes).
        stats: pixel statistics; default the directory's (`DatasetInfo.stats`).
        mean: "channel" (per-channel mean) or "pixel" (the paper's mean image).
        lighting_stddev: the PCA lighting alpha's standard deviation; 0 turns it off.
        seed: makes the order and the augmentation reproducible; None draws one.
        first_batch: batches already taken from this stream by an earlier run: a
            resumed run continues with the images, order and augmentation that an
            uninterrupted run would see next (given the same `seed`).
        batches_per_epoch: batches in one pass over the split (this pipeline's
            images // batch_size); needed with `first_batch`.
        deterministic: keep the order independent of thread timing (False lets tf.data
            hand over whichever image is ready first).
        shuffle_buffer: records shuffled together, on top of the shard order.
        input_context: this input pipeline's share of a distributed run.
        contract: the input contract (mean, channel order); default the one of training
            on `data_dir` with `mean`.
    """
    info = DatasetInfo.of(data_dir)
    shards, keys, label_offset = info.shards(split), info.keys, info.label_offset
    stats = stats or info.stats
    contract = contract or InputContract.from_data(info, image_size, mean,
                                                   num_classes=num_classes, stats=stats)
    resize_size = contract.resize_size
    seed = random.randrange(2**31) if seed is None else seed
    if first_batch and not batches_per_epoch:
        raise ValueError("first_batch needs batches_per_epoch")
    first_epoch, skip_batches = divmod(first_batch, batches_per_epoch or 1)

    def one_epoch(epoch):
        # This graph's own seed: the order then depends on `seed` and `epoch` alone (and
        # a global seed of 0 cannot meet tf.data's `seeds == (0, 0)` test on a tensor).
        tf.random.set_seed(1)
        epoch_seed = tf.constant(seed, tf.int64) * 1_000_003 + epoch
        records = _records(shards, shuffle_seed=epoch_seed, deterministic=deterministic,
                           input_context=input_context)
        records = records.shuffle(shuffle_buffer, seed=epoch_seed).enumerate()
        # Resuming mid-epoch: pass over the records already trained on, undecoded.
        records = records.skip(tf.where(epoch == first_epoch, np.int64(skip_batches * batch_size),
                                        np.int64(0)))

        def example(index, record_and_path):
            record, path = record_and_path
            image_bytes, label = _parse(record, keys, label_offset)
            image = augment(image_bytes, tf.stack([epoch_seed, index]),
                            image_size=image_size, resize_size=resize_size, stats=stats,
                            contract=contract, lighting_stddev=lighting_stddev)
            return image, label, path

        return (records
                .map(example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
                .batch(batch_size, drop_remainder=True)
                .map(lambda images, labels, paths:
                     (images, _check_labels(labels, paths, num_classes, keys.label))))

    dataset = tf.data.Dataset.counter(first_epoch).flat_map(one_epoch)
    return dataset.prefetch(AUTOTUNE)


# --- test time ----------------------------------------------------------------------------

def ten_patches(square: tf.Tensor, size: int) -> tf.Tensor:
    """The paper's ten test patches of a square image [paper §4.1], shape (10, size, size, C).

    Order: top-left, top-right, bottom-left, bottom-right, centre, then the same five
    reflected horizontally.
    """
    side = square.shape[0]
    far, mid = side - size, (side - size) // 2
    patches = tf.stack([square[top:top + size, left:left + size]
                        for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))])
    return tf.concat([patches, tf.reverse(patches, axis=[2])], axis=0)


def evaluation_dataset(data_dir: str | Path | DatasetInfo, image_size: int,
                       batch_size: int = TrainingOptions.batch_size, *,
                       num_classes: int, split: str = "validation", crops: str = "center",
                       stats: ImageStats | None = None, mean: str = "channel",
                       contract: InputContract | None = None) -> tf.data.Dataset:
    """Every image of the split once, in shard order, as (images, labels) batches.

    `crops="center"` gives (batch, size, size, 3) centre crops, `crops="ten"` gives
    (batch, 10, size, size, 3): the ten patches of `ten_patches`, of which index 4 is
    the centre crop.
    """
    if crops not in ("center", "ten"):
        raise AlexNetError(f"crops must be 'center' or 'ten', got {crops!r}")
    info = DatasetInfo.of(data_dir)
    shards, keys, label_offset = info.shards(split), info.keys, info.label_offset
    contract = contract or InputContract.from_data(info, image_size, mean,
                                                   num_classes=num_classes, stats=stats)
    resize_size = contract.resize_size

    def example(record, path):
        image_bytes, label = _parse(record, keys, label_offset)
        if crops == "center":
            image = contract.subtract_mean(decode_center_crop(image_bytes, image_size,
                                                              resize_size))
            return contract.to_network(image), label, path
        square = decode_center_crop(image_bytes, resize_size, resize_size)
        # The mean image covers the whole square, so subtract it before cutting patches.
        square = contract.to_network(contract.subtract_mean(square, 0, 0))
        return ten_patches(square, image_size), label, path

    # The split's image count sizes Keras's progress bar.
    dataset = _records(shards).apply(
        tf.data.experimental.assert_cardinality(info.records(split)))
    dataset = (dataset
               .map(example, num_parallel_calls=AUTOTUNE)
               .batch(batch_size)
               .map(lambda images, labels, paths:
                    (images, _check_labels(labels, paths, num_classes, keys.label)))
               .prefetch(AUTOTUNE))
    options = tf.data.Options()
    # Few validation shards: split by record, not by file, across workers.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)
