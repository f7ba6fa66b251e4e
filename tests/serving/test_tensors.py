"""`serving.tensors` against TensorFlow's own conversions (`tf.make_tensor_proto`,
`tf.make_ndarray`) and TF Serving's fill rule, in both encodings."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.tensors import data_type, fill_bytes, to_ndarray, to_tensor_proto

ARRAYS = [
    np.array([[1.5, -2.0], [3.25, 0.0]], np.float32), np.array([1.0, 1e300], np.float64),
    np.array([1, -7, 2**40], np.int64), np.array([3, 4], np.int32),
    np.array([-3, 4], np.int16), np.array([-128, 127], np.int8), np.array([0, 255], np.uint8),
    np.array([65535], np.uint16), np.array([2**32 - 1], np.uint32),
    np.array([2**64 - 1], np.uint64), np.array([0.5, 2.0, -np.inf], np.float16),
    np.array([True, False]), np.array([b"\xff\xd8jpeg", b""], dtype=object),
    np.zeros((0, 3), np.float32), np.float32(2.5)]


@pytest.mark.parametrize("values", ARRAYS, ids=lambda a: f"{a.dtype}{list(np.shape(a))}")
def test_tensors_round_trip_in_both_encodings_as_tensorflow_reads_them(values):
    typed = to_tensor_proto(values)
    packed = to_tensor_proto(values, tensor_content=True)
    if values.size:  # strings too, in TensorFlow's varint-length encoding
        assert not typed.tensor_content and packed.tensor_content
    reference = tf.make_tensor_proto(values)
    for proto in (typed, packed):
        assert proto.dtype == reference.dtype
        assert proto.tensor_shape == reference.tensor_shape
        # make_ndarray cannot read packed strings (TF Serving's C++ can).
        packed_strings = proto.tensor_content and proto.dtype == types_pb2.DT_STRING
        for decoded in [to_ndarray(proto)] + ([] if packed_strings else
                                               [tf.make_ndarray(proto)]):
            assert decoded.shape == np.shape(values) and decoded.dtype == reference_dtype(values)
            np.testing.assert_array_equal(decoded, values)
    np.testing.assert_array_equal(to_ndarray(reference), values)


def reference_dtype(values) -> np.dtype:
    return tf.make_ndarray(tf.make_tensor_proto(values)).dtype


@pytest.mark.parametrize("values", [[1.0, 2.5], [1, 2], [2**40], [[b"a"], [b"bc"]],
                                    ["text", "é"], [True]])
def test_python_lists_take_tensorflows_default_types(values):
    assert to_tensor_proto(values).dtype == tf.make_tensor_proto(values).dtype
    np.testing.assert_array_equal(to_ndarray(to_tensor_proto(values)),
                                  tf.make_ndarray(tf.make_tensor_proto(values)))


@pytest.mark.parametrize("dtype, field, values, expected", [
    (types_pb2.DT_FLOAT, "float_val", [7.0], [7.0, 7.0, 7.0]),
    (types_pb2.DT_INT64, "int64_val", [1, 5], [1, 5, 5]),
    (types_pb2.DT_FLOAT, "float_val", [], [0.0, 0.0, 0.0]),
    (types_pb2.DT_STRING, "string_val", [b"x"], [b"x", b"x", b"x"])])
def test_typed_fields_fewer_than_the_shape_fill_as_tensorflow_does(dtype, field, values,
                                                                    expected):
    # TF's rule (tensor.cc's FromProtoField): fewer typed values than elements repeat
    # the last one, and none at all give zeros.
    proto = tensor_pb2.TensorProto(dtype=dtype, **{field: values})
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(to_ndarray(proto), expected)
    if dtype != types_pb2.DT_STRING:  # make_ndarray fills numbers only
        np.testing.assert_array_equal(to_ndarray(proto), tf.make_ndarray(proto))
    sent = len(values)
    item = 24 + 1 if dtype == types_pb2.DT_STRING else tf.as_dtype(dtype).size
    assert fill_bytes(proto, 3) == (3 - sent) * item


def test_malformed_tensors_are_value_errors():
    too_many = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
    too_many.tensor_shape.dim.add(size=1)
    short = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 6)
    short.tensor_shape.dim.add(size=2)
    for proto in (too_many, short):
        with pytest.raises(ValueError):
            to_ndarray(proto)


def test_other_dtypes_go_through_tensorflow():
    values = np.array([1 + 2j, 3j], np.complex64)
    proto = to_tensor_proto(values)
    assert proto.dtype == types_pb2.DT_COMPLEX64 == data_type(values)
    np.testing.assert_array_equal(to_ndarray(proto), values)
