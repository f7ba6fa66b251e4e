"""numpy arrays <-> `TensorProto`, in either of the encodings TF Serving uses.

A `TensorProto` carries its values either packed in `tensor_content` or in the typed
repeated field of its dtype (`float_val`, `int64_val`, `string_val`, ...).  TF Serving
answers with the typed fields by default (`Tensor::AsProtoField`) and with
`tensor_content` under `--enable_serialization_as_tensor_content`; clients may send
either, so both directions handle both.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

# The typed field `Tensor::AsProtoField` fills for each dtype.
_TYPED_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_HALF: "half_val", types_pb2.DT_STRING: "string_val",
}


def dtype_name(dtype: int) -> str:
    """TensorFlow's `DataTypeString`: DT_FLOAT -> "float", DT_STRING -> "string"."""
    return types_pb2.DataType.Name(dtype)[len("DT_"):].lower()


def data_type(array: np.ndarray) -> int:
    """An array's `DataType` (numpy object arrays hold strings)."""
    return tf.as_dtype(tf.string if array.dtype == object else array.dtype).as_datatype_enum


def encode_varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_strings(values) -> bytes:
    """TensorFlow's string `tensor_content` (`port::EncodeStringList`): every length as a
    varint, then the bytes one after another."""
    values = [bytes(v) for v in values]
    return b"".join(encode_varint(len(v)) for v in values) + b"".join(values)


def decode_strings(content: bytes, count: int) -> list[bytes]:
    """The inverse of `encode_strings` for `count` strings; ValueError when malformed."""
    lengths, position = [], 0
    for _ in range(count):
        length = shift = 0
        while True:
            if position >= len(content):
                raise ValueError("string tensor_content is truncated")
            byte = content[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(length)
    if position + sum(lengths) != len(content):
        raise ValueError("string tensor_content does not hold the shape's strings")
    values = []
    for length in lengths:
        values.append(content[position:position + length])
        position += length
    return values


def to_tensor_proto(values, dtype=None, *, tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """An array-like as a `TensorProto`: typed `*_val` fields, or packed `tensor_content`
    (strings in TensorFlow's varint-length encoding, as TF Serving sends them with
    `--enable_serialization_as_tensor_content`)."""
    proto = tf.make_tensor_proto(values, dtype=dtype)
    field = _TYPED_FIELD.get(proto.dtype)
    if proto.dtype == types_pb2.DT_STRING and tensor_content:
        proto.tensor_content = encode_strings(proto.string_val)
        proto.ClearField("string_val")
        return proto
    if field is None or proto.dtype == types_pb2.DT_STRING:
        return proto
    flat = tf.make_ndarray(proto).ravel()
    proto.ClearField("tensor_content")
    proto.ClearField(field)
    if tensor_content:
        proto.tensor_content = flat.tobytes()
    else:
        if proto.dtype == types_pb2.DT_HALF:  # half_val holds the raw 16 bits
            flat = flat.view(np.uint16)
        getattr(proto, field).extend(flat.tolist())
    return proto


#: What TensorFlow keeps for each element of a string tensor beside its bytes:
#: sizeof(tstring).
TSTRING_BYTES = 24


def fill_bytes(proto: tensor_pb2.TensorProto, elements: int) -> int:
    """The memory that `elements` declared by the shape but not sent would take.

    TensorFlow reads a typed-field tensor with fewer values than its shape holds by
    filling the rest with the last value, or with zeros when none is sent
    (tensor.cc's FromProtoField), so a few bytes can declare gigabytes.  Packed
    `tensor_content` must hold every element, so it declares nothing unsent.  (A dtype
    without a typed field here counts as sending nothing.)"""
    if proto.tensor_content:
        return 0
    field = _TYPED_FIELD.get(proto.dtype)
    unsent = elements - (len(getattr(proto, field)) if field else 0)
    if unsent <= 0:
        return 0
    if proto.dtype == types_pb2.DT_STRING:
        return unsent * (TSTRING_BYTES + len(proto.string_val[-1] if proto.string_val else b""))
    return unsent * tf.as_dtype(proto.dtype).size


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A `TensorProto` in either encoding as a numpy array (strings as `bytes` objects)."""
    if proto.dtype == types_pb2.DT_STRING and proto.tensor_content:
        shape = [d.size for d in proto.tensor_shape.dim]
        strings = decode_strings(proto.tensor_content, int(np.prod(shape, dtype=np.int64)))
        return np.array(strings, dtype=object).reshape(shape)
    return tf.make_ndarray(proto)
