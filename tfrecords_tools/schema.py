"""The shard directory's contract: its file names, the TFRecord example schema, the
label convention, and the readers of its files.  Every module that reads or writes a
shard directory takes the names from here.

Keys match the TensorFlow models Inception converter (`image/encoded`,
`image/class/label`, ...).  Keys alone do not make readers agree on labels:

- `label_offset=0` (the default): labels 0..999, the sorted-WNID index, as TFDS's
  `imagenet2012` and Keras expect; `keras_alexnet.data` reads these.
- `label_offset=1`: labels 1..1000 with 0 for "background", as the Inception
  converter (`build_imagenet_data.py`) writes and as its `parse_example_proto`,
  tensorflow/tpu's ImageNet input and tf-models' official/legacy `parse_record` (which
  subtracts 1) expect; `keras_alexnet.data` reads these too (it takes the offset from
  `manifest.json`).

Either way line i of `labels.txt` is the class of label i + offset; unlabeled
records (the test split) have label -1.  Free of TensorFlow at import (the converter's
worker processes use it): `FEATURES` imports it on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import struct

import google_crc32c

from tfrecords_tools.base import storage
from tfrecords_tools.base.wire import varint
from tfrecords_tools.errors import DatasetError

SPLITS = ("train", "validation", "test")
DEFAULT_NUM_SHARDS = {"train": 1024, "validation": 128, "test": 128}
#: Smaller archives get fewer shards, none under this many images (ILSVRC-2012's
#: 1.28 M / 50 k / 100 k images keep the defaults above).
MIN_IMAGES_PER_SHARD = 256


def default_num_shards(split: str, images: int) -> int:
    """The number of shards a split of `images` images gets unless told otherwise."""
    return max(1, min(DEFAULT_NUM_SHARDS[split], images // MIN_IMAGES_PER_SHARD))

UNLABELED = -1
LABEL_OFFSETS = (0, 1)

# The files of a shard directory.
LABELS = "labels.txt"  # line i: WNID<TAB>name of label i + label_offset
MANIFEST = "manifest.json"  # per split: records, shards with sha256, skips, repairs
STATS = "stats.json"  # pixel statistics on the [0, 1] scale (tfrecords_tools.stats)
MEAN_IMAGE = "mean_image.npy"  # the per-pixel mean image [paper §2]
STATE_DIR = ".convert"  # the converter's receipts, job records, index cache, buckets


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


# The protobuf wire format of an Example, written directly:
#   Example  { 1: Features { 1: repeated map entry { 1: key, 2: Feature } } }
#   Feature  { 1: BytesList { 1: repeated bytes } | 3: Int64List { 1: packed int64 } }
# each message field as tag byte, varint length, contents.

def _entry(key: str, feature_tag: bytes, value_list: bytes, payload: bytes = b"") -> bytes:
    """The head of one `features` map entry whose Feature holds `value_list` + `payload`
    as its `feature_tag` list (the payload, the image, is appended by the caller)."""
    key = key.encode()
    inner = len(value_list) + len(payload)
    feature = 1 + len(varint(inner)) + inner
    body = 2 + len(varint(len(key))) + len(key) + len(varint(feature)) + feature
    return (b"\x0a" + varint(body) + b"\x0a" + varint(len(key)) + key + b"\x12"
            + varint(feature) + feature_tag + varint(inner) + value_list)


# Cached: heights, widths, labels and their synsets and texts repeat from image to image.
@functools.lru_cache(maxsize=4096)
def _cached_bytes(key: str, value: bytes) -> bytes:
    return _bytes(key, value)


def _bytes(key: str, value: bytes) -> bytes:
    return _entry(key, b"\x0a", b"\x0a" + varint(len(value)) + value)


@functools.lru_cache(maxsize=4096)
def _int64(key: str, value: int) -> bytes:
    packed = varint(value)
    return _entry(key, b"\x1a", b"\x0a" + varint(len(packed)) + packed)


_CONSTANT = {"image/format": _bytes("image/format", b"JPEG"),
             "image/colorspace": _bytes("image/colorspace", b"RGB"),
             "image/channels": _int64("image/channels", 3)}
_ORDER = sorted([*_CONSTANT, "image/encoded", "image/height", "image/width", "image/filename",
                 "image/class/label", "image/class/synset", "image/class/text"])


def serialize(record: ImageRecord) -> bytes:
    """The record as a serialized `tf.train.Example`.

    Encoded here rather than through `tf.train.Example`, with the bytes that
    `SerializeToString(deterministic=True)` gives (map entries sorted by key, so shards
    are byte-identical) at a third of the cost, with the image copied once.
    """
    encoded = record.encoded
    entries = {**_CONSTANT,
               "image/encoded": _entry("image/encoded", b"\x0a",
                                       b"\x0a" + varint(len(encoded)), encoded),
               "image/height": _int64("image/height", record.height),
               "image/width": _int64("image/width", record.width),
               "image/filename": _bytes("image/filename", record.filename.encode()),
               "image/class/label": _int64("image/class/label", record.label),
               "image/class/synset": _cached_bytes("image/class/synset", record.synset.encode()),
               "image/class/text": _cached_bytes("image/class/text", record.text.encode())}
    parts = [part for key in _ORDER for part in (
        (entries[key], encoded) if key == "image/encoded" else (entries[key],))]
    features = sum(len(part) for part in parts)
    return b"".join([b"\x0a", varint(features), *parts])


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(serialized: bytes) -> bytes:
    """`serialized` framed as one TFRecord: length, masked CRC-32C of the length, the
    data and its masked CRC-32C, the bytes `tf.io.TFRecordWriter` writes."""
    length = struct.pack("<Q", len(serialized))
    return b"".join((length, _masked_crc(length), serialized, _masked_crc(serialized)))


@dataclasses.dataclass(frozen=True)
class RecordKeys:
    """Where a shard's Examples keep the image (JPEG), its label and its file name: ours
    by default (`KEYS`); a TFDS prepared dataset names its own (`tfds.read_prepared`).
    A key absent from the Examples reads as the `FEATURES` default of its field."""

    image: str = "image/encoded"
    label: str = "image/class/label"
    filename: str = "image/filename"

    def spec(self, *fields: str) -> dict:
        """The parsing spec of `fields` (of "image", "label", "filename"; default all),
        keyed by these keys."""
        fields = fields or tuple(field.name for field in dataclasses.fields(self))
        return {getattr(self, field): _features()[getattr(KEYS, field)] for field in fields}


KEYS = RecordKeys()


@functools.cache
def _features() -> dict:
    import tensorflow as tf

    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
        "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELED),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def __getattr__(name: str):
    # FEATURES, the parsing spec for `tf.io.parse_single_example` / `parse_example`,
    # needs TensorFlow: built on first use, so that importing this module does not.
    if name == "FEATURES":
        globals()["FEATURES"] = features = _features()
        return features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_labels(path) -> list[tuple[str, str]]:
    """`labels.txt`: line i is `WNID<TAB>name` for label i."""
    entries = []
    with storage.path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            wnid, sep, name = line.rstrip("\n").partition("\t")
            if not sep or not wnid:
                raise DatasetError(f"{path}:{number}: expected 'WNID<TAB>name', got {line!r}")
            entries.append((wnid, name))
    return entries


def read_manifest(directory: str | storage.PathOrUrl) -> dict:
    """`manifest.json` of a shard directory; a clear error when it is absent or damaged."""
    path = storage.path(directory) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: no such file; write it with `python -m "
                                f"tfrecords_tools convert` (or `merge`)") from error
    except ValueError as error:
        raise DatasetError(f"{path}: not a readable manifest ({error}); rerun `python -m "
                           f"tfrecords_tools merge {directory}`") from error
