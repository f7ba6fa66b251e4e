import pytest
import tensorflow as tf

from tfrecords_tools import schema


def _protobuf_example(record: schema.ImageRecord) -> bytes:
    """The same record through tf.train.Example: what `serialize` must match byte for byte."""
    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int64_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {"image/encoded": bytes_feature(record.encoded),
               "image/format": bytes_feature(b"JPEG"),
               "image/colorspace": bytes_feature(b"RGB"),
               "image/channels": int64_feature(3),
               "image/height": int64_feature(record.height),
               "image/width": int64_feature(record.width),
               "image/filename": bytes_feature(record.filename.encode()),
               "image/class/label": int64_feature(record.label),
               "image/class/synset": bytes_feature(record.synset.encode()),
               "image/class/text": bytes_feature(record.text.encode())}
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


# Lengths and values around the varint byte boundaries, the unlabeled -1 (ten bytes as an
# int64), empty and non-ASCII strings.
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 70000, 2 ** 21 + 3])
@pytest.mark.parametrize("label", [schema.UNLABELED, 0, 127, 128, 999, -2 ** 63, 2 ** 63 - 1])
def test_serialize_matches_protobuf_deterministic_bytes(size, label):
    record = schema.ImageRecord(bytes(range(256)) * (size // 256) + b"\xff" * (size % 256),
                                size % 300, 2 ** 31 + size, f"n01440764_{size}.JPEG",
                                label, "" if label < 0 else "n01440764",
                                "" if label < 0 else "tench, Tinca tinca — é")
    assert schema.serialize(record) == _protobuf_example(record)


def test_serialized_record_parses_back():
    record = schema.ImageRecord(b"\xff\xd8jpeg", 256, 300, "n01440764_1.JPEG", 5, "n01440764",
                                "tench")
    parsed = tf.io.parse_single_example(schema.serialize(record), schema.FEATURES)
    assert parsed["image/encoded"].numpy() == record.encoded
    assert (parsed["image/height"].numpy(), parsed["image/width"].numpy()) == (256, 300)
    assert parsed["image/class/label"].numpy() == 5
    assert parsed["image/class/text"].numpy() == b"tench"


def test_record_keys_parse_examples_that_name_their_fields_otherwise():
    # A TFDS imagenet2012 Example: the same fields under `image`, `label` and `file_name`.
    example = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8jpeg"])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))}))
    keys = schema.RecordKeys(image="image", label="label", filename="file_name")
    parsed = tf.io.parse_single_example(example.SerializeToString(), keys.spec())
    assert parsed["image"].numpy() == b"\xff\xd8jpeg" and parsed["label"].numpy() == 7
    assert parsed["file_name"].numpy() == b""  # absent: the default of image/filename
    assert set(keys.spec("image", "label")) == {"image", "label"}
    ours = tf.io.parse_single_example(schema.serialize(schema.ImageRecord(
        b"\xff\xd8jpeg", 1, 1, "a.JPEG", 3)), schema.KEYS.spec())
    assert (ours["image/class/label"].numpy(), ours["image/filename"].numpy()) == (3, b"a.JPEG")
