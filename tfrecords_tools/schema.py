"""The TFRecord example schema shared by the converter and every reader (DESIGN.md §2).

Keys match the TensorFlow models Inception converter, so existing readers work on
our shards.  Labels are 0-based indices into the sorted WNIDs; -1 means unlabeled.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

SPLITS = ("train", "validation", "test")
DEFAULT_NUM_SHARDS = {"train": 1024, "validation": 128, "test": 128}
UNLABELED = -1


def shard_name(split: str, index: int, num_shards: int) -> str:
    """`train-00000-of-01024`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def shard_pattern(split: str) -> str:
    return f"{split}-?????-of-?????"


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image as stored in a shard."""

    encoded: bytes  # RGB JPEG
    height: int
    width: int
    filename: str  # archive member base name
    label: int = UNLABELED
    synset: str = ""
    text: str = ""


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def serialize(record: ImageRecord) -> bytes:
    """The record as a serialized `tf.train.Example`."""
    feature = {
        "image/encoded": _bytes(record.encoded),
        "image/format": _bytes(b"JPEG"),
        "image/colorspace": _bytes(b"RGB"),
        "image/channels": _int64(3),
        "image/height": _int64(record.height),
        "image/width": _int64(record.width),
        "image/filename": _bytes(record.filename.encode()),
        "image/class/label": _int64(record.label),
        "image/class/synset": _bytes(record.synset.encode()),
        "image/class/text": _bytes(record.text.encode()),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Protobuf map order is per process unless asked; shards must be byte-identical.
    return example.SerializeToString(deterministic=True)


#: Parsing spec for `tf.io.parse_single_example` / `parse_example`.
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELED),
    "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def read_labels(path) -> list[tuple[str, str]]:
    """`labels.txt`: line i is `WNID<TAB>name` for label i."""
    entries = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            wnid, sep, name = line.rstrip("\n").partition("\t")
            if not sep or not wnid:
                raise ValueError(f"{path}:{number}: expected 'WNID<TAB>name', got {line!r}")
            entries.append((wnid, name))
    return entries
