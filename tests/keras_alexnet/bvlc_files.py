"""BVLC-AlexNet-shaped model files with random weights, written without the importer's code.

- `write_onnx`: the ONNX zoo model's operators (Conv, Relu, LRN, MaxPool, Flatten, Gemm,
  Dropout, Softmax) with onnx.helper; onnxruntime runs it as the reference.
- `write_caffemodel`: a NetParameter hand-encoded in protobuf's wire format from
  caffe.proto's field numbers (the new `layer` field or the legacy V1 `layers`), so a
  wrong field number in the importer's descriptors cannot cancel out (only the varint
  encoder is shared, from tfrecords_tools.base.wire).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tfrecords_tools.base.wire import varint

#: (name, Caffe blob shape of the weights) of BVLC AlexNet (deploy.prototxt).
SHAPES = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
          "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
          "fc7": (4096, 4096), "fc8": (1000, 4096)}
#: (pad, group, stride) of each convolution.
CONV = {"conv1": (0, 1, 4), "conv2": (2, 2, 1), "conv3": (1, 1, 1), "conv4": (1, 2, 1),
        "conv5": (1, 2, 1)}


def random_weights(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random weights scaled by 1/sqrt(fan-in): on inputs of the 0-255 scale the logits
    stay in the tens, where the softmax is neither flat nor saturated."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in SHAPES.items():
        fan_in = int(np.prod(shape[1:]))
        weight = rng.normal(0, np.sqrt(1.0 / fan_in), shape).astype(np.float32)
        weights[name] = (weight, rng.normal(0, 0.1, shape[0]).astype(np.float32))
    return weights


# --- ONNX ---------------------------------------------------------------------------------

def write_onnx(path: Path, weights, *, size: int = 227, ceil_pads: bool = False) -> Path:
    """`ceil_pads`: pool1 with one row and column of end padding, as Caffe-to-ONNX
    converters write Caffe's rounded-up pooling."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []
    current = "data_0"

    def node(op, inputs, **attrs):
        nonlocal current
        output = f"{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, [current, *inputs], [output],
                                      name=f"{op}_{len(nodes)}", **attrs))
        current = output

    def params(name):
        weight, bias = weights[name]
        initializers.extend([numpy_helper.from_array(weight, f"{name}_w_0"),
                             numpy_helper.from_array(bias, f"{name}_b_0")])
        return [f"{name}_w_0", f"{name}_b_0"]

    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        pad, group, stride = CONV[name]
        kernel = SHAPES[name][2]
        node("Conv", params(name), kernel_shape=[kernel, kernel], strides=[stride, stride],
             pads=[pad] * 4, group=group)
        node("Relu", [])
        if name in ("conv1", "conv2"):
            node("LRN", [], size=5, alpha=1e-4, beta=0.75, bias=1.0)
        if name in ("conv1", "conv2", "conv5"):
            pads = [0, 0, 1, 1] if ceil_pads and name == "conv1" else [0, 0, 0, 0]
            node("MaxPool", [], kernel_shape=[3, 3], strides=[2, 2], pads=pads)
    node("Flatten", [], axis=1)
    for name in ("fc6", "fc7", "fc8"):
        node("Gemm", params(name), transB=1)
        if name != "fc8":
            node("Relu", [])
            node("Dropout", [])
    node("Softmax", [])
    graph = helper.make_graph(
        nodes, "bvlc_alexnet",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [None, 3, size, size])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [None, 1000])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    onnx.save(model, str(path))
    return path


def write_torchvision_alexnet_onnx(path: Path) -> Path:
    """torchvision's one-tower AlexNet (64/192/384/256/256 filters, no LRN, no groups)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    layers = [("features.0", (64, 3, 11, 11), 4, 2), ("features.3", (192, 64, 5, 5), 1, 2)]
    nodes, initializers, current = [], [], "input"
    for name, shape, stride, pad in layers:
        initializers += [numpy_helper.from_array(rng.normal(0, 0.01, shape).astype(np.float32),
                                                 f"{name}.weight"),
                         numpy_helper.from_array(np.zeros(shape[0], np.float32),
                                                 f"{name}.bias")]
        nodes.append(helper.make_node("Conv", [current, f"{name}.weight", f"{name}.bias"],
                                      [f"{name}.out"], kernel_shape=list(shape[2:]),
                                      strides=[stride] * 2, pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"]))
        nodes.append(helper.make_node("MaxPool", [f"{name}.relu"], [f"{name}.pool"],
                                      kernel_shape=[3, 3], strides=[2, 2]))
        current = f"{name}.pool"
    graph = helper.make_graph(
        nodes, "torchvision_alexnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]), str(path))
    return path


# --- protobuf wire format -----------------------------------------------------------------

def _key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def uint(field: int, value: int) -> bytes:
    return _key(field, 0) + varint(value)


def f32(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def nested(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + varint(len(payload)) + payload


def text(field: int, value: str) -> bytes:
    return nested(field, value.encode())


def blob(values: np.ndarray, *, legacy: bool) -> bytes:
    """BlobProto: packed float data (5) and shape (7, BlobShape dim 1 packed int64), or
    the legacy num/channels/height/width (1-4) padded on the left to four."""
    data = nested(5, np.ascontiguousarray(values, "<f4").tobytes())
    if legacy:
        dims = (1,) * (4 - values.ndim) + values.shape
        return b"".join(uint(number, d) for number, d in enumerate(dims, 1)) + data
    return nested(7, nested(1, b"".join(varint(d) for d in values.shape))) + data


def write_caffemodel(path: Path, weights, *, v1: bool = False) -> Path:
    """A trained BVLC AlexNet NetParameter (train_val's layers, data and loss included)."""
    if v1:  # V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum), blobs 6; params
        fields = {"bottom": 2, "top": 3, "name": 4, "blobs": 6, "conv": 10, "fc": 17,
                  "lrn": 18, "pool": 19}
        types = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17,
                 "InnerProduct": 14, "Dropout": 6, "SoftmaxWithLoss": 21, "Accuracy": 1}
    else:  # LayerParameter: name 1, type 2 (string), bottom 3, top 4, blobs 7; params
        fields = {"name": 1, "bottom": 3, "top": 4, "blobs": 7, "conv": 106, "fc": 117,
                  "lrn": 118, "pool": 121}

    def layer(name, kind, bottom, top, blobs=(), param=b"", param_field=None):
        body = text(fields["name"], name)
        body += uint(5, types[kind]) if v1 else text(2, kind)
        body += text(fields["bottom"], bottom) if bottom else b""
        body += text(fields["top"], top)
        body += b"".join(nested(fields["blobs"], blob(b, legacy=v1)) for b in blobs)
        if param_field:
            body += nested(fields[param_field], param)
        return nested(2 if v1 else 100, body)

    out = text(1, "AlexNet") + layer("data", "Data", None, "data")
    previous = "data"
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        pad, group, stride = CONV[name]
        weight, bias = weights[name]
        # ConvolutionParameter: num_output 1, pad 3, kernel_size 4, group 5, stride 6
        param = (uint(1, weight.shape[0]) + (uint(3, pad) if pad else b"")
                 + uint(4, weight.shape[2]) + (uint(5, group) if group > 1 else b"")
                 + (uint(6, stride) if stride > 1 else b""))
        out += layer(name, "Convolution", previous, name, (weight, bias), param, "conv")
        out += layer(f"relu{name[-1]}", "ReLU", name, name)
        previous = name
        if name in ("conv1", "conv2"):
            # LRNParameter: local_size 1, alpha 2, beta 3 (k left at its default 1)
            lrn = uint(1, 5) + f32(2, 1e-4) + f32(3, 0.75)
            out += layer(f"norm{name[-1]}", "LRN", previous, f"norm{name[-1]}", (), lrn,
                         "lrn")
            previous = f"norm{name[-1]}"
        if name in ("conv1", "conv2", "conv5"):
            # PoolingParameter: pool 1 (MAX = 0, the default), kernel_size 2, stride 3
            out += layer(f"pool{name[-1]}", "Pooling", previous, f"pool{name[-1]}", (),
                         uint(2, 3) + uint(3, 2), "pool")
            previous = f"pool{name[-1]}"
    for name in ("fc6", "fc7", "fc8"):
        weight, bias = weights[name]
        out += layer(name, "InnerProduct", previous, name, (weight, bias),
                     uint(1, weight.shape[0]), "fc")  # InnerProductParameter: num_output 1
        previous = name
        if name != "fc8":
            out += layer(f"relu{name[-1]}", "ReLU", name, name)
            out += layer(f"drop{name[-1]}", "Dropout", name, name)
    out += layer("accuracy", "Accuracy", "fc8", "accuracy")
    out += layer("loss", "SoftmaxWithLoss", "fc8", "loss")
    path.write_bytes(out)
    return path


def write_mean_binaryproto(path: Path, mean_bgr: np.ndarray) -> Path:
    """Caffe's mean file: a BlobProto (1, 3, H, W) in B, G, R, legacy dims."""
    path.write_bytes(blob(mean_bgr[None], legacy=True))
    return path
