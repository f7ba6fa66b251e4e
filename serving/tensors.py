"""numpy arrays <-> `TensorProto`, in either of the encodings TF Serving uses.

A `TensorProto` carries its values either packed in `tensor_content` or in the typed
repeated field of its dtype (`float_val`, `int64_val`, `string_val`, ...).  TF Serving
answers with the typed fields by default (`Tensor::AsProtoField`) and with
`tensor_content` under `--enable_serialization_as_tensor_content`; clients may send
either, so both directions handle both.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfrecords_tools.base.wire import varint

# Each DataType this module encodes itself, numpy's dtype for it and the typed field
# `Tensor::AsProtoField` fills.  Others (bfloat16, complex, quantized, ...) go through
# TensorFlow, loaded then: a client sending images and reading scores never needs it.
_DTYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"), types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"), types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"), types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"), types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"), types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"), types_pb2.DT_STRING: (object, "string_val"),
}
_DATA_TYPES = {np.dtype(numpy_type): data_type
               for data_type, (numpy_type, _) in _DTYPES.items() if numpy_type is not object}


def dtype_name(dtype: int) -> str:
    """TensorFlow's `DataTypeString`: DT_FLOAT -> "float", DT_STRING -> "string"."""
    return types_pb2.DataType.Name(dtype)[len("DT_"):].lower()


def data_type(array: np.ndarray) -> int:
    """An array's `DataType` (numpy object, bytes and str arrays hold strings)."""
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    if array.dtype in _DATA_TYPES:
        return _DATA_TYPES[array.dtype]
    import tensorflow as tf

    return tf.as_dtype(array.dtype).as_datatype_enum


def encode_strings(values) -> bytes:
    """TensorFlow's string `tensor_content` (`port::EncodeStringList`): every length as a
    varint, then the bytes one after another."""
    values = [bytes(v) for v in values]
    return b"".join(varint(len(v)) for v in values) + b"".join(values)


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


def _strings(values: list[bytes]) -> np.ndarray:
    """A 1-D object array of `bytes`, one element each, whatever their lengths."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _array(values) -> np.ndarray:
    """`values` as an array, as `tf.make_tensor_proto` takes them: Python floats as
    float32 and Python ints as int32 where every value fits (numpy's defaults are 64-bit),
    text as UTF-8 bytes."""
    if isinstance(values, (np.ndarray, np.generic)):
        array = np.asarray(values)
    else:
        array = np.array(values)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64 and np.array_equal(array.astype(np.int32), array):
            array = array.astype(np.int32)
    if array.dtype.kind in "OSU":
        flat = [value.encode() if isinstance(value, str) else bytes(value)
                for value in array.ravel().tolist()]
        array = _strings(flat).reshape(array.shape)
    return array


def to_tensor_proto(values, *, tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """An array-like as a `TensorProto`: typed `*_val` fields, or packed `tensor_content`
    (strings in TensorFlow's varint-length encoding, as TF Serving sends them with
    `--enable_serialization_as_tensor_content`)."""
    array = _array(values)
    dtype = data_type(array)
    if dtype not in _DTYPES:
        import tensorflow as tf

        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.ravel()
    if dtype == types_pb2.DT_STRING:
        if tensor_content:
            proto.tensor_content = encode_strings(flat)
        else:
            proto.string_val.extend(flat.tolist())
    elif tensor_content:
        proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
    else:
        if dtype == types_pb2.DT_HALF:  # half_val holds the raw 16 bits
            flat = flat.view(np.uint16)
        getattr(proto, _DTYPES[dtype][1]).extend(flat.tolist())
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
    if proto.dtype in _DTYPES:
        numpy_type, field = _DTYPES[proto.dtype]
        unsent = elements - len(getattr(proto, field))
        size = np.dtype(numpy_type).itemsize
    else:
        import tensorflow as tf

        unsent, size = elements, tf.as_dtype(proto.dtype).size
    if unsent <= 0:
        return 0
    if proto.dtype == types_pb2.DT_STRING:
        return unsent * (TSTRING_BYTES + len(proto.string_val[-1] if proto.string_val else b""))
    return unsent * size


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A `TensorProto` in either encoding as a numpy array (strings as `bytes` objects),
    read as TensorFlow reads it (`tf.make_ndarray`): typed values fewer than the shape
    holds repeat the last one, none at all are zeros.  ValueError when malformed."""
    if proto.dtype not in _DTYPES:
        import tensorflow as tf

        return tf.make_ndarray(proto)
    shape = [d.size for d in proto.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64))
    numpy_type, field = _DTYPES[proto.dtype]
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            values = _strings(decode_strings(proto.tensor_content, count))
        else:
            values = np.frombuffer(proto.tensor_content,
                                   np.dtype(numpy_type).newbyteorder("<")).astype(numpy_type)
        return values.reshape(shape)
    typed = getattr(proto, field)
    if proto.dtype == types_pb2.DT_HALF:
        values = np.array(typed, np.uint16).view(np.float16)
    elif proto.dtype == types_pb2.DT_STRING:
        values = _strings(list(typed))
    else:
        values = np.array(typed, numpy_type)
    if len(values) > count:
        raise ValueError(f"{len(values)} values for a shape of {count} elements")
    if len(values) == 0:
        return (np.full(count, b"", dtype=object) if proto.dtype == types_pb2.DT_STRING
                else np.zeros(count, numpy_type)).reshape(shape)
    return np.pad(values, (0, count - len(values)), mode="edge").reshape(shape)
