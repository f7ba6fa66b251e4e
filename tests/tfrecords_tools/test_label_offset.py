"""`--label-offset 1` writes what the Inception-family readers expect; 0 what TFDS and
Keras expect; keras_alexnet trains on either (it reads the offset from the manifest)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import SAMPLE_IMAGE_SIZE
from tfrecords_tools import schema
from tfrecords_tools.convert import convert
from tfrecords_tools.dataset import DatasetInfo
from tfrecords_tools.errors import OutputError


def inception_parse_example_proto(example_serialized):
    """The label part of tensorflow/models research/inception/inception/image_processing.py
    `parse_example_proto`, its feature map and cast as written there (TF 2 names for
    `tf.FixedLenFeature` and `tf.parse_single_example`).  Its model has 1001 outputs,
    0 being "background"."""
    feature_map = {
        'image/encoded': tf.io.FixedLenFeature([], dtype=tf.string, default_value=''),
        'image/class/label': tf.io.FixedLenFeature([1], dtype=tf.int64, default_value=-1),
        'image/class/text': tf.io.FixedLenFeature([], dtype=tf.string, default_value=''),
    }
    features = tf.io.parse_single_example(example_serialized, feature_map)
    label = tf.cast(features['image/class/label'], dtype=tf.int32)
    return features['image/encoded'], label, features['image/class/text']


def legacy_parse_record_label(raw_record):
    """tf-models official/legacy image_classification `parse_record`'s label: "Subtract
    one so that labels are in [0, 1000)"."""
    label = tf.io.parse_single_example(raw_record, {
        'image/class/label': tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1)
    })['image/class/label']
    return tf.cast(tf.cast(tf.reshape(label, shape=[1]), dtype=tf.int32) - 1, dtype=tf.int32)


@pytest.fixture(scope="module")
def offset_one(sample_archives, tmp_path_factory):
    output = tmp_path_factory.mktemp("offset1")
    convert(output, sample_archives.directory, splits=["validation"],
            validation_shards=2, size=SAMPLE_IMAGE_SIZE, processes=1,
            label_offset=1, progress=False)
    return output


def _records(directory):
    return [r.numpy() for f in sorted(directory.glob(schema.shard_pattern("validation")))
            for r in tf.data.TFRecordDataset(str(f))]


def test_inception_readers_get_their_convention(offset_one, sample_archives):
    names = [name for _, name in schema.read_labels(offset_one / schema.LABELS)]
    expected = {f"ILSVRC2012_val_{i:08d}.JPEG": label
                for i, label in enumerate(sample_archives.validation_labels, 1)}
    for record in _records(offset_one):
        _, label, text = inception_parse_example_proto(record)
        filename = tf.train.Example.FromString(record).features.feature[
            "image/filename"].bytes_list.value[0].decode()
        assert int(label[0]) == expected[filename] + 1  # 1..10, 0 left to "background"
        assert names[int(label[0]) - 1] == text.numpy().decode()
        assert int(legacy_parse_record_label(record)[0]) == expected[filename]
    assert json.loads((offset_one / schema.MANIFEST).read_text())["label_offset"] == 1
    assert DatasetInfo(offset_one).label_offset == 1


def test_the_legacy_reader_is_off_by_one_on_0_based_shards(converted_shards):
    labels = [int(legacy_parse_record_label(r)[0]) for r in _records(converted_shards)]
    assert min(labels) == -1  # why --label-offset 1 exists


def test_keras_alexnet_reads_either_convention(offset_one, converted_shards):
    from keras_alexnet import data

    def labels(directory):
        batches = data.evaluation_dataset(directory, 64, 16, num_classes=10)
        return np.concatenate([b.numpy() for _, b in batches])

    # The same images in the same order: the same shard plan, only the labels differ.
    assert labels(offset_one).tolist() == labels(converted_shards).tolist()
    assert set(labels(offset_one)) == set(range(10))


def test_one_directory_holds_one_convention(offset_one, sample_archives, tmp_path):
    with pytest.raises(OutputError, match=r"holds validation shards with --label-offset 1"):
        convert(offset_one, sample_archives.directory, splits=["test"],
                test_shards=1, size=SAMPLE_IMAGE_SIZE, processes=1,
                label_offset=0, progress=False)
