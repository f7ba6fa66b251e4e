"""REST request bodies to tensors and tf.Examples: TF Serving's `util/json_tensor.cc`.

Every value is checked as TF Serving checks it (`AddValueToTensor`,
`FillTensorProto`, `AddValueToFeature`), so whatever a client sends is answered with
TF Serving's INVALID_ARGUMENT message rather than failing inside numpy or protobuf.
Numbers are read as rapidjson reads them: an integer beyond uint64 is a double, a
number beyond a double's range is a parse error.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2

from serving.errors import InvalidArgumentError, UnimplementedError
from serving.tensors import dtype_name

#: TensorShape::MaxDimensions(): deeper lists cannot be a tensor.
MAX_DIMS = 254
#: The JSON value ranges of rapidjson's IsInt, IsInt64, IsUint and IsUint64.
_INT_RANGES = {
    types_pb2.DT_INT32: (-2**31, 2**31), types_pb2.DT_INT16: (-2**31, 2**31),
    types_pb2.DT_INT8: (-2**31, 2**31), types_pb2.DT_UINT8: (-2**31, 2**31),
    types_pb2.DT_INT64: (-2**63, 2**63), types_pb2.DT_UINT32: (0, 2**32),
    types_pb2.DT_UINT64: (0, 2**64),
}
_FLOATS = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)


class _NumberTooBig(ValueError):
    """rapidjson's kParseErrorNumberTooBig."""


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberTooBig("Number too big to be stored in double.")
    return value


def _json_int(text: str) -> int | float:
    if len(text) > 21:  # past uint64 for sure; Python refuses to parse 4300 digits
        return _json_float(text)
    value = int(text)
    return value if -2**63 <= value < 2**64 else _json_float(text)


def parse_json(body: bytes) -> dict:
    """`ParseJson`: the body as a JSON object."""
    if not body.strip():
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    try:
        document = json.loads(body.decode(), parse_int=_json_int, parse_float=_json_float)
    except RecursionError:  # rapidjson parses iteratively; Python's json recurses
        raise InvalidArgumentError("JSON Parse error: The document nests too deeply "
                                   "to parse") from None
    except ValueError as error:  # JSONDecodeError, _NumberTooBig, UnicodeDecodeError
        raise InvalidArgumentError(f"JSON Parse error: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} Is not object")
    return document


def debug_string(value) -> str:
    """`JsonValueToDebugString`: rapidjson's compact writer."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        return "<nested too deeply to print>"


def json_type(value) -> str:
    """`JsonTypeString`."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def signature_name(document: dict) -> str:
    """`FillSignature`: the optional "signature_name"."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} not formatted "
                                   f"correctly. 'signature_name' key must be a string value.")
    return name


def _is_base64(value) -> bool:
    """`IsValBase64Object`: {"b64": "<string>"} and nothing else."""
    return (isinstance(value, dict) and len(value) == 1
            and isinstance(value.get("b64"), str))


def _base64(value) -> bytes:
    """`JsonDecodeBase64Object`."""
    if not _is_base64(value):
        raise InvalidArgumentError(f"JSON Value: {debug_string(value)} not formatted "
                                   f"correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except binascii.Error:
        raise InvalidArgumentError("Unable to base64 decode") from None


def _type_error(value, dtype: int) -> InvalidArgumentError:
    return InvalidArgumentError(f"JSON Value: {debug_string(value)} Type: "
                                f"{json_type(value)} is not of expected type: "
                                f"{dtype_name(dtype)}")


def _leaf(value, dtype: int):
    """`AddValueToTensor` (objects: base64 strings only)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, dict):
            return _base64(value)
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode()
    if dtype in _FLOATS:
        if not number:
            raise _type_error(value, dtype)
        return value
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (isinstance(value, int) and number and low <= value < high):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise UnimplementedError(f"Conversion of JSON Value: {debug_string(value)} to type: "
                             f"{dtype_name(dtype)}")


def tensor(value, dtype: int) -> np.ndarray:
    """`GetDenseTensorShape` and `FillTensorProto`: a JSON value (nested lists) as an
    array of `dtype`, its shape that of the first elements, every list checked against
    it.  Walked level by level, without recursion."""
    shape, probe = [], value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > MAX_DIMS:
            raise InvalidArgumentError(f"JSON Value nests lists more than {MAX_DIMS} deep, "
                                       f"the most dimensions a tensor has")
        probe = probe[0] if probe else None
    items = [value]
    for level, size in enumerate(shape):
        below = []
        for item in items:
            if not isinstance(item, list):
                raise InvalidArgumentError(
                    f"JSON Value: {debug_string(item)} found at incorrect level: "
                    f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
            if len(item) != size:
                raise InvalidArgumentError(f"Encountered list at unexpected size: "
                                           f"{len(item)} at level: {level} expected size: "
                                           f"{size}")
            below.extend(item)
        items = below
    leaves = []
    for item in items:
        if isinstance(item, list):
            raise InvalidArgumentError(f"Encountered list at unexpected level: {len(shape)} "
                                       f"expected < {len(shape)}")
        leaves.append(_leaf(item, dtype))
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    return np.array(leaves, dtype=tf.as_dtype(dtype).as_numpy_dtype).reshape(shape)


def _shape(array: np.ndarray) -> str:
    return f"[{','.join(map(str, array.shape))}]"  # ShapeToString


def _instance_item(value, dtype: int, first: np.ndarray | None) -> np.ndarray:
    """`AddInstanceItem`: one element of "instances", the same size and shape as the
    first."""
    array = tensor(value, dtype)
    if first is not None and array.size != first.size:
        raise InvalidArgumentError(f"Expecting tensor size: {first.size} but got: "
                                   f"{array.size}")
    if first is not None and array.shape != first.shape:
        raise InvalidArgumentError(f"Expecting shape {_shape(first)} but got: "
                                   f"{_shape(array)}")
    return array


def _element_error(number: int, error: InvalidArgumentError, key: str | None = None
                   ) -> InvalidArgumentError:
    where = f"{number} key: {key}" if key is not None else f"{number}"
    return InvalidArgumentError(f"Failed to process element: {where} of 'instances' list. "
                                f"Error: {error.code.name}: {error.message}")


def _instances(instances: list, inputs) -> dict[str, np.ndarray]:
    """`FillTensorMapFromInstancesList`: one tensor per input, batched over the list."""
    if not isinstance(instances[0], dict) and len(inputs) > 1:
        raise InvalidArgumentError("instances is a plain list, but expecting list of objects "
                                   "as multiple input tensors required as per "
                                   "tensorinfo_map")
    objects = isinstance(instances[0], dict) and not _is_base64(instances[0])
    rows: dict[str, list[np.ndarray]] = {}
    for number, element in enumerate(instances):
        is_object = isinstance(element, dict) and not _is_base64(element)
        if objects and not is_object:
            raise InvalidArgumentError(f"Expecting object but got list at item {number} of "
                                       f"input list")
        if not objects and is_object:
            raise InvalidArgumentError(f"Expecting value/list but got object at item "
                                       f"{number} of input list")
        named = element if objects else {next(iter(inputs)): element}
        for alias, value in named.items():
            try:
                if alias not in inputs:
                    raise InvalidArgumentError(f"JSON object: does not have named input: "
                                               f"{alias}")
                column = rows.setdefault(alias, [])
                column.append(_instance_item(value, inputs[alias].dtype,
                                             column[0] if column else None))
            except InvalidArgumentError as error:
                raise _element_error(number, error, alias if objects else None) from None
        if objects and set(element) != set(inputs):
            raise InvalidArgumentError(
                f"Failed to process element: {number} of 'instances' list. JSON object: "
                f"{debug_string(element)} keys must be equal to: {','.join(sorted(inputs))}")
    return {alias: np.stack(column) for alias, column in rows.items()}


def predict_inputs(document: dict, inputs) -> tuple[dict[str, np.ndarray], str]:
    """`FillPredictRequestFromJson`: the tensors by alias, and the format ("row" for
    "instances", "columnar" for "inputs")."""
    if "instances" in document and "inputs" in document:
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} Not formatted "
                                   f"correctly expecting only one of 'inputs' or "
                                   f"'instances' keys to exist ")
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidArgumentError(f"JSON Value: {debug_string(document)} Expecting "
                                       f"'instances' to be an list/array")
        if not instances:
            raise InvalidArgumentError(f"JSON Value: {debug_string(document)} No values in "
                                       f"'instances' array")
        return _instances(instances, inputs), "row"
    if "inputs" in document:
        values = document["inputs"]
        if not isinstance(values, dict) or _is_base64(values):
            if len(inputs) > 1:
                raise InvalidArgumentError("inputs is a plain value/list, but expecting an "
                                           "object as multiple input tensors required as "
                                           "per tensorinfo_map")
            (alias, info), = inputs.items()
            return {alias: tensor(values, info.dtype)}, "columnar"
        for alias in sorted(inputs):
            if alias not in values:
                raise InvalidArgumentError(f"Missing named input: {alias} in 'inputs' "
                                           f"object.")
        return {alias: tensor(values[alias], info.dtype)
                for alias, info in inputs.items()}, "columnar"
    raise InvalidArgumentError("Missing 'inputs' or 'instances' key")


_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _add_to_feature(value, name: str, feature: feature_pb2.Feature) -> None:
    """`AddValueToFeature`: one value, of the feature's kind so far."""
    if value is None or isinstance(value, list) or (isinstance(value, dict)
                                                    and not _is_base64(value)):
        raise InvalidArgumentError(f"Feature: {name} has element with unexpected JSON type: "
                                   f"{json_type(value)}")
    if isinstance(value, bool):
        kind, value = "int64_list", int(value)
    elif isinstance(value, dict):
        kind, value = "bytes_list", _base64(value)
    elif isinstance(value, str):
        kind, value = "bytes_list", value.encode()
    elif isinstance(value, float):
        kind = "float_list"
    else:
        if value >= 2**63:
            raise InvalidArgumentError(f"Feature: {name} has uint64_t element. Only int64_t "
                                       f"is supported.")
        kind = "int64_list"
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise InvalidArgumentError(f"Unexpected element type in feature: {name} expecting "
                                   f"type: {_KINDS[current]}")
    getattr(feature, kind).value.append(value)


def example(value) -> example_pb2.Example:
    """`MakeExampleFromJsonObject`."""
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"Example must be JSON object but got JSON "
                                   f"{json_type(value)}")
    result = example_pb2.Example()
    for name, content in value.items():
        feature = result.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, feature)
    return result


def fill_examples(document: dict, target) -> None:
    """`FillClassifyRegressRequestFromJson`: "examples" and the optional "context" into
    a request's `Input`.  (TF Serving's message says "classify" for Regress too.)"""
    context = example(document["context"]) if "context" in document else None
    examples = document.get("examples")
    if "examples" not in document:
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} When method is "
                                   f"classify, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} Expecting "
                                   f"'examples' value to be an list/array")
    if not examples:
        raise InvalidArgumentError(f"JSON Value: {debug_string(document)} 'examples' value "
                                   f"is an empty array")
    parsed = [example(e) for e in examples]
    if context is not None:
        target.example_list_with_context.context.CopyFrom(context)
        target.example_list_with_context.examples.extend(parsed)
    else:
        target.example_list.examples.extend(parsed)
