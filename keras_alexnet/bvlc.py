"""Pretrained BVLC AlexNet into the two-tower model: Caffe's `bvlc_alexnet.caffemodel` or
the ONNX model zoo's `bvlcalexnet-*.onnx`.

BVLC's AlexNet is the paper's network [paper §3.5, Figure 2] with the two GPUs written
as groups: conv2, conv4 and conv5 have `group: 2` (group g reads and writes tower g's
channels), conv3 and the fully connected layers read both towers.  It differs from
the paper in the geometry (227x227 inputs, no conv1 padding: `CAFFE_GEOMETRY`) and in
Caffe's LRN, summed across both towers' maps (`CAFFE_LRN`; Caffe divides alpha by the
window size, as the authors' cuda-convnet does).  It has no conv6: a CNN* config
(`AlexNetConfig.conv6`) over these weights is refused, naming conv6.  The mapping:

- group g of a grouped convolution, and the g-th half of a full layer's outputs, go to
  tower g (fc8's 1000 outputs split 500/500, as `model.build_network` splits them);
- Caffe blobs are (out, in/group, kh, kw) -> Keras (kh, kw, in, out); fc weights are
  (out, in) -> (in, out);
- fc6 reads pool5 flattened channel-major (C, H, W) over 256 channels; here each tower
  flattens its own 128 channels (H, W, C) and fc6 reads tower a's then tower b's;
- conv1's filters read BGR in Caffe; they are reversed to read this model's RGB input,
  and the Caffe mean (B, G, R) = (104, 117, 123) becomes the contract's RGB mean.

The classes: `SYNSET_WORDS` beside this module is BVLC's `synset_words.txt` (from
Caffe's `caffe_ilsvrc12.tar.gz`, which Caffe's `data/ilsvrc12/get_ilsvrc_aux.sh`
fetches): the 1000 ILSVRC-2012 WNIDs, sorted, each with its WordNet names, in the order
of BVLC AlexNet's fc8 outputs; shipped, so naming them needs no download.

The files are read without Caffe: the few `caffe.proto` messages a `.caffemodel` needs
are declared here as protobuf descriptors (both NetParameter's `layer` and the legacy
V1 `layers` field); ONNX files need the `onnx` package (`pip install -e ".[onnx]"`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from keras_alexnet.config import CAFFE_GEOMETRY, CAFFE_LRN, AlexNetConfig
from keras_alexnet.contract import InputContract
from keras_alexnet.errors import AlexNetError, MissingPackageError
from keras_alexnet.model import TOWERS

#: BVLC's preprocessing: the Caffe mean (104, 117, 123) in B, G, R, as R, G, B; 227x227
#: crops of images rescaled to 256x256 (Caffe's `transform_param`).
CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)
CAFFE_RESIZE_SIZE = 256
#: The ILSVRC-2012 classes in BVLC's output order (`n01440764 tench, Tinca tinca`).
SYNSET_WORDS = Path(__file__).with_name("synset_words.txt")


@dataclasses.dataclass
class Layer:
    """One layer of the file, in the terms both formats share."""

    kind: str  # "conv", "lrn", "pool", "fc"
    name: str
    params: dict
    weight: np.ndarray | None = None  # conv (out, in/group, kh, kw); fc (out, in)
    bias: np.ndarray | None = None


def _conv(name, outputs, inputs, kernel, stride, pad, group):
    return ("conv", name, {"outputs": outputs, "inputs": inputs, "kernel": kernel,
                           "stride": stride, "pad": pad, "group": group})


_LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
_POOL = {"method": "MAX", "kernel": 3, "stride": 2, "pad": 0}
#: BVLC AlexNet's layers that carry weights or shape the maps, in order (deploy.prototxt);
#: "inputs" is a filter's input channels (per group).
EXPECTED = (
    _conv("conv1", 96, 3, 11, 4, 0, 1), ("lrn", "norm1", _LRN), ("pool", "pool1", _POOL),
    _conv("conv2", 256, 48, 5, 1, 2, 2), ("lrn", "norm2", _LRN), ("pool", "pool2", _POOL),
    _conv("conv3", 384, 256, 3, 1, 1, 1), _conv("conv4", 384, 192, 3, 1, 1, 2),
    _conv("conv5", 256, 192, 3, 1, 1, 2), ("pool", "pool5", _POOL),
    ("fc", "fc6", {"outputs": 4096, "inputs": 9216}),
    ("fc", "fc7", {"outputs": 4096, "inputs": 4096}),
    ("fc", "fc8", {"outputs": None, "inputs": 4096}),  # any class count
)


# --- .caffemodel --------------------------------------------------------------------------

@functools.cache
def _caffe_messages() -> dict[str, type]:
    """The caffe.proto messages a trained net's weights need, with caffe.proto's field
    numbers and defaults (enums read as their numbers)."""
    field = descriptor_pb2.FieldDescriptorProto
    kinds = {"string": field.TYPE_STRING, "bytes": field.TYPE_BYTES, "int32": field.TYPE_INT32,
             "uint32": field.TYPE_UINT32, "int64": field.TYPE_INT64,
             "float": field.TYPE_FLOAT, "double": field.TYPE_DOUBLE, "bool": field.TYPE_BOOL}
    file = descriptor_pb2.FileDescriptorProto(name="keras_alexnet/caffe.proto",
                                              package="keras_alexnet.caffe", syntax="proto2")

    def message(name: str, *fields: str) -> None:
        declared = file.message_type.add(name=name)
        for spec in fields:  # "[repeated] type name = number [default]"
            words = spec.split()
            repeated = words[0] == "repeated"
            kind, field_name, _, number, *default = words[1:] if repeated else words
            added = declared.field.add(
                name=field_name, number=int(number),
                label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if kind in kinds:
                added.type = kinds[kind]
            else:
                added.type, added.type_name = field.TYPE_MESSAGE, f".keras_alexnet.caffe.{kind}"
            if default:
                added.default_value = default[0]

    message("BlobShape", "repeated int64 dim = 1")
    # `data` is caffe.proto's `repeated float data = 5 [packed = true]`: packed, it is one
    # length-delimited run of little-endian float32 on the wire, read here as bytes so
    # that 61 million weights need no per-value conversion (likewise `double_data`).
    message("BlobProto", "int32 num = 1", "int32 channels = 2", "int32 height = 3",
            "int32 width = 4", "bytes data = 5", "BlobShape shape = 7",
            "bytes double_data = 8")
    message("ConvolutionParameter", "uint32 num_output = 1", "bool bias_term = 2 true",
            "repeated uint32 pad = 3", "repeated uint32 kernel_size = 4",
            "uint32 group = 5 1", "repeated uint32 stride = 6", "uint32 pad_h = 9",
            "uint32 pad_w = 10", "uint32 kernel_h = 11", "uint32 kernel_w = 12",
            "uint32 stride_h = 13", "uint32 stride_w = 14")
    message("InnerProductParameter", "uint32 num_output = 1", "bool bias_term = 2 true",
            "bool transpose = 6 false")
    message("LRNParameter", "uint32 local_size = 1 5", "float alpha = 2 1",
            "float beta = 3 0.75", "int32 norm_region = 4 0", "float k = 5 1")
    message("PoolingParameter", "int32 pool = 1 0", "uint32 kernel_size = 2",
            "uint32 stride = 3 1", "uint32 pad = 4 0", "uint32 kernel_h = 5",
            "uint32 kernel_w = 6", "uint32 stride_h = 7", "uint32 stride_w = 8",
            "uint32 pad_h = 9", "uint32 pad_w = 10", "bool global_pooling = 12 false")
    message("LayerParameter", "string name = 1", "string type = 2",
            "repeated string bottom = 3", "repeated string top = 4",
            "repeated BlobProto blobs = 7", "ConvolutionParameter convolution_param = 106",
            "InnerProductParameter inner_product_param = 117",
            "LRNParameter lrn_param = 118", "PoolingParameter pooling_param = 121")
    message("V1LayerParameter", "repeated string bottom = 2", "repeated string top = 3",
            "string name = 4", "int32 type = 5", "repeated BlobProto blobs = 6",
            "ConvolutionParameter convolution_param = 10",
            "InnerProductParameter inner_product_param = 17",
            "LRNParameter lrn_param = 18", "PoolingParameter pooling_param = 19")
    message("NetParameter", "string name = 1", "repeated V1LayerParameter layers = 2",
            "repeated LayerParameter layer = 100")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {m.name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"keras_alexnet.caffe.{m.name}")) for m in file.message_type}


#: V1LayerParameter.LayerType numbers of the kinds read here (caffe.proto).
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU",
             6: "Dropout", 20: "Softmax", 21: "SoftmaxWithLoss", 5: "Data", 1: "Accuracy",
             22: "Split", 12: "ImageData", 29: "MemoryData"}
_POOL_METHODS = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


def _blob(blob) -> np.ndarray:
    if blob.double_data:
        values = np.frombuffer(blob.double_data, "<f8").astype(np.float32)
    else:
        values = np.frombuffer(blob.data, "<f4")
    shape = tuple(blob.shape.dim) if blob.HasField("shape") else tuple(
        d for d in (blob.num, blob.channels, blob.height, blob.width))
    if math.prod(shape) != values.size:
        raise AlexNetError(f"a blob of shape {shape} holds {values.size} values")
    return values.reshape(shape)


def _single(values, default: int) -> int:
    return int(values[0]) if len(values) else default


def _caffe_layer(layer, kind: str) -> Layer | None:
    blobs = [_blob(b) for b in layer.blobs]
    if kind == "Convolution":
        p = layer.convolution_param
        kernel = p.kernel_h or _single(p.kernel_size, 0)
        weight = blobs[0] if blobs else None
        return Layer("conv", layer.name, {
            "outputs": p.num_output, "kernel": kernel,
            "stride": p.stride_h or _single(p.stride, 1), "pad": p.pad_h or _single(p.pad, 0),
            "group": p.group, "inputs": weight.shape[1] if weight is not None else None},
            weight, blobs[1].reshape(-1) if len(blobs) > 1 else None)
    if kind == "InnerProduct":
        weight = blobs[0].reshape(blobs[0].shape[-2:]) if blobs else None  # V1: (1, 1, o, i)
        if weight is not None and layer.inner_product_param.transpose:
            weight = weight.T
        return Layer("fc", layer.name, {
            "outputs": layer.inner_product_param.num_output,
            "inputs": weight.shape[1] if weight is not None else None},
            weight, blobs[1].reshape(-1) if len(blobs) > 1 else None)
    if kind == "LRN":
        p = layer.lrn_param
        return Layer("lrn", layer.name, {"size": p.local_size, "alpha": p.alpha,
                                         "beta": p.beta, "k": p.k,
                                         "region": p.norm_region})
    if kind == "Pooling":
        p = layer.pooling_param
        return Layer("pool", layer.name, {
            "method": _POOL_METHODS.get(p.pool, str(p.pool)),
            "kernel": p.kernel_h or p.kernel_size, "stride": p.stride_h or p.stride,
            "pad": p.pad_h or p.pad, "global": p.global_pooling})
    if blobs:
        raise AlexNetError(f"layer {layer.name!r} ({kind}) has weights, which BVLC AlexNet has "
                           f"only in Convolution and InnerProduct layers")
    return None  # ReLU, Dropout, Softmax, data and loss layers carry no weights


def read_caffemodel(path: str | Path) -> list[Layer]:
    """The layers of a `.caffemodel` (NetParameter, `layer` or V1 `layers`)."""
    path = Path(path)
    net = _caffe_messages()["NetParameter"]()
    try:
        net.ParseFromString(path.read_bytes())
    except DecodeError as error:
        raise AlexNetError(f"{path}: not a Caffe model (NetParameter): {error}; is the file "
                           f"complete?") from error
    if net.layer:
        pairs = [(layer, layer.type) for layer in net.layer]
    else:
        pairs = [(layer, _V1_TYPES.get(layer.type, f"V1 type {layer.type}"))
                 for layer in net.layers]
    if not pairs:
        raise AlexNetError(f"{path}: a NetParameter without layers; is this a .caffemodel?")
    layers = []
    for layer, kind in pairs:
        try:
            read = _caffe_layer(layer, kind)
        except ValueError as error:
            raise AlexNetError(f"{path}: {error}") from error
        if read is not None:
            layers.append(read)
    return layers


# --- .onnx --------------------------------------------------------------------------------

def _square(values) -> int | tuple[int, ...]:
    """One number for the same size on every side, else all of them (never this net)."""
    values = tuple(int(v) for v in values)
    return values[0] if len(set(values)) == 1 else values


def _pool_pad(pads) -> int | tuple[int, ...]:
    # Caffe rounds pooled sizes up; converters write that as one row and column of end
    # padding (0, 0, 1, 1).  At 227x227 inputs both roundings give 27, 13 and 6.
    return 0 if tuple(pads) == (0, 0, 1, 1) else _square(pads)


def read_onnx(path: str | Path) -> list[Layer]:
    """The layers of an ONNX model (Conv, LRN, MaxPool/AveragePool, Gemm)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise MissingPackageError("reading .onnx files needs the onnx package: "
                                  "pip install -e \".[onnx]\"") from error
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError or its own errors
        raise AlexNetError(f"{path}: not an ONNX model ({error}); is the file complete?") \
            from error
    initial = {t.name: numpy_helper.to_array(t).astype(np.float32)
               for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weights = [initial[name] for name in node.input[1:] if name in initial]
        name = node.name or (node.output[0] if node.output else node.op_type)
        if node.op_type == "Conv":
            layers.append(Layer("conv", name, {
                "outputs": weights[0].shape[0], "inputs": weights[0].shape[1],
                "kernel": _square(attrs.get("kernel_shape", weights[0].shape[2:])),
                "stride": _square(attrs.get("strides", [1, 1])),
                "pad": _square(attrs.get("pads", [0, 0, 0, 0])),
                "group": attrs.get("group", 1)}, weights[0],
                weights[1] if len(weights) > 1 else None))
        elif node.op_type == "Gemm":
            weight = weights[0] if attrs.get("transB", 0) else weights[0].T
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
                raise AlexNetError(f"{path}: Gemm {name!r} is not x @ W.T + b")
            layers.append(Layer("fc", name, {"outputs": weight.shape[0],
                                             "inputs": weight.shape[1]}, weight,
                                weights[1] if len(weights) > 1 else None))
        elif node.op_type == "LRN":
            layers.append(Layer("lrn", name, {"size": attrs.get("size"),
                                              "alpha": attrs.get("alpha", 1e-4),
                                              "beta": attrs.get("beta", 0.75),
                                              "k": attrs.get("bias", 1.0), "region": 0}))
        elif node.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool",
                              "GlobalMaxPool"):
            layers.append(Layer("pool", name, {
                "method": "MAX" if "Max" in node.op_type else "AVE",
                "kernel": _square(attrs.get("kernel_shape", [0])),
                "stride": _square(attrs.get("strides", [1])),
                "pad": _pool_pad(attrs.get("pads", [0, 0, 0, 0])),
                "global": node.op_type.startswith("Global")}))
        elif weights and node.op_type not in ("Reshape", "Flatten", "Dropout"):
            raise AlexNetError(f"{path}: node {name!r} ({node.op_type}) has weights, which "
                               f"BVLC AlexNet has only in Conv and Gemm nodes")
    return layers


# --- checking and mapping -----------------------------------------------------------------

def check_network(layers: list[Layer], source: str) -> None:
    """That `layers` are BVLC AlexNet's; a ValueError naming the first difference."""
    for index, (kind, paper_name, expected) in enumerate(EXPECTED):
        if index >= len(layers):
            raise AlexNetError(f"{source}: ends after {len(layers)} layers, before {kind} "
                               f"{paper_name}; not BVLC AlexNet (or a truncated file)")
        layer = layers[index]
        if layer.kind != kind:
            raise AlexNetError(f"{source}: layer {index + 1} {layer.name!r} is {layer.kind}, "
                               f"expected {kind} ({paper_name}); not BVLC AlexNet")
        for key, value in expected.items():
            found = layer.params.get(key)
            same = value is None or (math.isclose(found, value, rel_tol=1e-5)
                                     if isinstance(value, float) else found == value)
            if not same:
                raise AlexNetError(f"{source}: {layer.name!r} ({paper_name}) has {key} "
                                   f"{found}, expected {value}; not BVLC AlexNet")
        if layer.params.get("region", 0) or layer.params.get("global"):
            raise AlexNetError(f"{source}: {layer.name!r} ({paper_name}) is not an "
                               f"across-channel LRN / windowed pooling; not BVLC AlexNet")
        if kind in ("conv", "fc") and (layer.weight is None or layer.bias is None):
            raise AlexNetError(f"{source}: {layer.name!r} ({paper_name}) has no weights or no "
                               f"biases; a deploy prototxt instead of the trained model?")
        if kind in ("conv", "fc"):
            outputs = layer.params["outputs"]
            shape = (outputs, expected["inputs"]) + (
                (expected["kernel"],) * 2 if kind == "conv" else ())
            if layer.weight.shape != shape or layer.bias.shape != (outputs,):
                raise AlexNetError(f"{source}: {layer.name!r} ({paper_name}) has weights "
                                   f"{layer.weight.shape} and biases {layer.bias.shape}, "
                                   f"expected {shape} and ({outputs},); not BVLC AlexNet")
    if len(layers) > len(EXPECTED):
        extra = layers[len(EXPECTED)]
        raise AlexNetError(f"{source}: has a layer after fc8 ({extra.kind} {extra.name!r}); "
                           f"not BVLC AlexNet")


def _halves(values: np.ndarray, sizes: tuple[int, int]) -> list[np.ndarray]:
    """Split along axis 0 as `model.build_network` splits a layer's outputs between towers."""
    return np.split(values, [sizes[0]], axis=0)


def tower_weights(layers: list[Layer]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{f"{tower}_{layer}": (kernel, bias)}` in this model's layout."""
    weighted = {name: layer for (kind, name, _), layer in zip(EXPECTED, layers, strict=False)
                if kind in ("conv", "fc")}
    result = {}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        layer = weighted[name]
        weight = layer.weight
        if name == "conv1":
            weight = weight[:, ::-1]  # BGR filters -> RGB input
        half = weight.shape[0] // 2
        for tower, kernel, bias in zip(TOWERS, _halves(weight, (half, half)),
                                       _halves(layer.bias, (half, half)), strict=True):
            result[f"{tower}_{name}"] = (kernel.transpose(2, 3, 1, 0), bias)
    fc6 = weighted["fc6"]
    channels = weighted["conv5"].weight.shape[0]  # 256 over both towers
    side = math.isqrt(fc6.weight.shape[1] // channels)  # 6
    for tower, kernel, bias in zip(TOWERS, _halves(fc6.weight, (2048, 2048)),
                                   _halves(fc6.bias, (2048, 2048)), strict=True):
        # Caffe columns (c, h, w) over 256 channels -> rows (tower, h, w, c) per tower.
        grid = kernel.reshape(-1, 2, channels // 2, side, side)
        result[f"{tower}_fc6"] = (grid.transpose(1, 3, 4, 2, 0).reshape(-1, kernel.shape[0]),
                                  bias)
    for name in ("fc7", "fc8"):
        layer = weighted[name]
        outputs = layer.weight.shape[0]
        sizes = (outputs - outputs // 2, outputs // 2)
        for tower, kernel, bias in zip(TOWERS, _halves(layer.weight, sizes),
                                       _halves(layer.bias, sizes), strict=True):
            result[f"{tower}_{name}"] = (kernel.T, bias)
    return result


# --- the classes and the mean -------------------------------------------------------------

def read_classes(path: str | Path, count: int) -> tuple[tuple[str, str], ...]:
    """(wnid, name) in label order from a `labels.txt` (WNID<TAB>name), a synset words
    file (`n01440764 tench, Tinca tinca`, Caffe's and the ONNX zoo's) or the ILSVRC2012
    devkit (its 1000 leaf synsets, sorted by WNID)."""
    path = Path(path)
    if tarfile.is_tarfile(path):
        from tfrecords_tools.devkit import read_devkit

        classes = read_devkit(path).classes
        pairs = tuple(zip(classes.wnids, classes.names, strict=True))
    else:
        pairs = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            wnid, _, name = line.replace("\t", " ", 1).partition(" ")
            if not (wnid.startswith("n") and wnid[1:].isdigit()):
                raise AlexNetError(f"{path}:{number}: expected 'WNID name', got {line!r}")
            pairs.append((wnid, name.strip()))
        pairs = tuple(pairs)
    if len(pairs) != count:
        raise AlexNetError(f"{path} lists {len(pairs)} classes but the model has {count}")
    return pairs


def read_mean_image(path: str | Path) -> np.ndarray:
    """A mean image as (256, 256, 3) RGB on the 0-255 scale: Caffe's BGR
    `.binaryproto` (ilsvrc_2012_mean.binaryproto) or a `.npy` already in RGB."""
    path = Path(path)
    if path.suffix == ".npy":
        image = np.load(path).astype(np.float32)
    else:
        blob = _caffe_messages()["BlobProto"]()
        try:
            blob.ParseFromString(path.read_bytes())
            values = _blob(blob)
            image = values.reshape(-1, *values.shape[-3:])[0]  # (3, H, W) BGR
        except (DecodeError, ValueError) as error:
            raise AlexNetError(f"{path}: not a Caffe mean BlobProto ({error})") from error
        image = image.transpose(1, 2, 0)[..., ::-1]
    if image.shape != (CAFFE_RESIZE_SIZE, CAFFE_RESIZE_SIZE, 3):
        raise AlexNetError(f"{path}: a mean image of shape {image.shape}, expected "
                           f"({CAFFE_RESIZE_SIZE}, {CAFFE_RESIZE_SIZE}, 3)")
    return np.ascontiguousarray(image, np.float32)


# --- import -------------------------------------------------------------------------------

READERS: dict[str, Callable[[Path], list[Layer]]] = {".caffemodel": read_caffemodel,
                                                     ".onnx": read_onnx}


def bvlc_config(num_classes: int = 1000) -> AlexNetConfig:
    """The configuration BVLC's weights imply: Caffe's geometry and LRN, no conv6."""
    return AlexNetConfig(num_classes=num_classes, **CAFFE_GEOMETRY, **CAFFE_LRN)


def import_weights(path: str | Path, model_dir: str | Path, *,
                   labels: str | Path | None = None,
                   mean_image: str | Path | None = None) -> Path:
    """Writes BVLC AlexNet's weights as a checkpoint of this model; returns its path.

    Args:
        path: a `.caffemodel` or an `.onnx` file of BVLC AlexNet.
        model_dir: where `checkpoints/epoch-0000.keras` goes; `evaluate`, `export`,
            `predict`, the pictures and `fit` (fine-tuning) read it like any other.
        labels: the classes in the model's output order: a `labels.txt`, a synset
            words file (`SYNSET_WORDS`: ILSVRC-2012's, as BVLC's weights order them) or
            the ILSVRC2012 devkit; without it the classes are unnamed.
        mean_image: subtract this 256x256 mean image (Caffe `.binaryproto` or RGB
            `.npy`) instead of the per-channel Caffe mean.
    """
    from keras_alexnet import checkpoints
    from keras_alexnet.model import build_network

    path, model_dir = Path(path), Path(model_dir)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise AlexNetError(f"{path}: expected a .caffemodel or an .onnx file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    target = new_checkpoint_path(model_dir)
    layers = reader(path)
    check_network(layers, str(path))
    num_classes = layers[len(EXPECTED) - 1].params["outputs"]
    if num_classes < 2:
        raise AlexNetError(f"{path}: fc8 has {num_classes} outputs; not a classifier")
    config = bvlc_config(num_classes)
    classes = (read_classes(labels, num_classes) if labels is not None
               else tuple(("", f"class {i}") for i in range(num_classes)))
    image = read_mean_image(mean_image) if mean_image is not None else None
    model = build_network(config)
    for layer_name, (kernel, bias) in tower_weights(layers).items():
        inner = model.get_layer(layer_name).layer
        inner.kernel.assign(np.ascontiguousarray(kernel))
        inner.bias.assign(bias)
    mean_rgb = CAFFE_MEAN_RGB if image is None else tuple(
        float(v) for v in image.mean(axis=(0, 1)))
    model.input_contract = InputContract(
        classes, config.image_size, CAFFE_RESIZE_SIZE,
        "channel" if image is None else "pixel", mean_rgb, image)
    return checkpoints.save_checkpoint(model, target, {"epoch": 0, "step": 0,
                                                       "imported_from": str(path)})


def new_checkpoint_path(model_dir: str | Path) -> Path:
    """Where an import into `model_dir` goes; refused if a checkpoint is already there."""
    from keras_alexnet import checkpoints

    target = checkpoints.checkpoint_path(model_dir, 0)
    if target.exists():
        raise FileExistsError(f"{target} already exists; import into another model_dir")
    return target
