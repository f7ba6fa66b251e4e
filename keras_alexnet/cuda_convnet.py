"""The authors' own network definitions: cuda-convnet's layer files as Keras models.

cuda-convnet (the code of the paper) defines a network in two INI files: the layers
(`layers-*.cfg`: each section a layer, its `type`, `inputs` and shape) and their
learning parameters (`layer-params-*.cfg`: `epsW`, `momW`, `wc`, and rnorm's `scale`
and `pow`).  `build_model` reads both, in cuda-convnet's arithmetic, as its
`layer.py` does (mbrukman/cuda-convnet's export, cited below by file and line):

- conv: `filters` of `filterSize` over `channels`, `padding`, `stride`, weights drawn
  N(0, initW²), biases `initB` (layer.py 715, 732); one bias per filter with
  `sharedBiases` (935).  Its output width is 1 + ceil((2·padding + img - filterSize) /
  stride) (885): where that rounds up, the last window overhangs the padded image
  and reads zeros.
- pool (max, avg): 1 + ceil((img - start - sizeX) / stride) outputs when `outputsX`
  is 0 (1018), rounding up where Keras rounds down; a window overhanging the image
  takes what lies inside, and avg divides by the pixels inside, not sizeX²
  (include/cudaconv2/conv_util.cuh 161-186).
- rnorm, within a map: x·(1 + scale/size²·Σx²)^-pow over the size x size window from
  x - ⌊size/2⌋, clipped at the edge (layer.py 1036; src/cudaconv2/conv_util.cu
  758-804); cmrnorm, across maps: x·(1 + scale/size·Σx²)^-pow over the maps from
  f - ⌊size/2⌋ (conv_util.cu 1068-1086): the paper's LRN with k = 1 and alpha =
  scale/size (`layers.LocalResponseNormalization`), for an odd size.
- fc over one or several inputs (a weight matrix each, summed), `neuron=relu` on any
  layer, softmax, and the data and cost.logreg layers (the input and the loss).

A layer type, key or value it cannot build is one line naming the file, the section
and the key.  Not yet: cuda-convnet2's files (`groups`, `gpu=`, `dropout`, `minDiv`,
`dexp` schedules), conv over several inputs, local layers, and training with the
files' per-layer rates.  Flattening for fc follows Keras's (height, width, channels)
order, not cuda-convnet's (channels first): counts and shapes agree, imported weights
would need reordering.
"""

from __future__ import annotations

import configparser
import math
import os
from pathlib import Path

import keras
import tensorflow as tf

from keras_alexnet.errors import AlexNetError
from keras_alexnet.layers import LocalResponseNormalization

#: What each layer type of the files takes; anything else is refused by name.
KEYS = {
    "data": {"dataIdx"},
    "conv": {"inputs", "channels", "filters", "filterSize", "padding", "stride", "initW",
             "initB", "partialSum", "sharedBiases", "neuron"},
    "pool": {"inputs", "pool", "start", "sizeX", "stride", "outputsX", "channels", "neuron"},
    "fc": {"inputs", "outputs", "initW", "initB", "neuron"},
    "rnorm": {"inputs", "channels", "size", "neuron"},
    "cmrnorm": {"inputs", "channels", "size", "neuron"},
    "softmax": {"inputs"},
    "cost.logreg": {"inputs"},
}


class CudaConvnetError(AlexNetError):
    """A layer file this module cannot build; the message names the section and key."""


def pool_outputs(size: int, start: int, window: int, stride: int) -> int:
    """cuda-convnet's count of pooling windows along a side (layer.py 1018)."""
    return math.ceil((size - start - window) / stride) + 1


@keras.saving.register_keras_serializable(package="keras_alexnet")
class ConvNetPool(keras.layers.Layer):
    """Max or average pooling as cuda-convnet counts and divides (module docstring)."""

    def __init__(self, mode: str, size: int, stride: int, outputs: int, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.size, self.stride, self.outputs = mode, size, stride, outputs

    def call(self, inputs):
        extra = (self.outputs - 1) * self.stride + self.size - inputs.shape[1]
        padding = [[0, 0], [0, max(extra, 0)], [0, max(extra, 0)], [0, 0]]
        window = dict(ksize=self.size, strides=self.stride, padding="VALID")
        if self.mode == "max":
            padded = tf.pad(inputs, padding, constant_values=float("-inf"))
            return tf.nn.max_pool2d(padded, **window)
        inside = tf.pad(tf.ones_like(inputs[..., :1]), padding)
        return tf.nn.avg_pool2d(tf.pad(inputs, padding), **window) / tf.nn.avg_pool2d(
            inside, **window)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode, "size": self.size,
                "stride": self.stride, "outputs": self.outputs}


@keras.saving.register_keras_serializable(package="keras_alexnet")
class ConvNetNorm(keras.layers.Layer):
    """cuda-convnet's rnorm, within each map (module docstring).  Its cmrnorm, across
    maps, is this package's `LocalResponseNormalization` with k = 1 and alpha =
    scale / size."""

    def __init__(self, size: int, scale: float, power: float, **kwargs):
        super().__init__(**kwargs)
        self.size, self.scale, self.power = size, scale, power

    def call(self, inputs):
        before, after = self.size // 2, self.size - 1 - self.size // 2
        padded = tf.pad(tf.square(inputs), [[0, 0], [before, after], [before, after], [0, 0]])
        total = tf.nn.avg_pool2d(padded, self.size, 1, "VALID") * self.size ** 2
        return inputs * tf.pow(1.0 + self.scale / self.size ** 2 * total, -self.power)

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "scale": self.scale,
                "power": self.power}


def _read(path: str | os.PathLike) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=None)
    parser.optionxform = str  # keys keep their case: filterSize
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except configparser.Error as error:
        raise CudaConvnetError(f"{path}: not a cuda-convnet layer file ({error})") from error
    return parser


class _Section:
    """One layer's keys, each read once, a missing or bad one named with the file."""

    def __init__(self, path: Path, name: str, values: dict[str, str]):
        self.path, self.name, self.values = path, name, values

    def error(self, key: str, what: str) -> CudaConvnetError:
        return CudaConvnetError(f"{self.path}: [{self.name}] {key}: {what}")

    def get(self, key: str, kind=int, default=None):
        if key not in self.values:
            if default is None:
                raise self.error(key, "missing")
            return default
        try:
            return kind(self.values[key])
        except ValueError:
            raise self.error(key, f"expected {kind.__name__}, got "
                                  f"{self.values[key]!r}") from None


def build_model(layers_cfg: str | os.PathLike, params_cfg: str | os.PathLike,
                input_shape: tuple[int, int, int]) -> keras.Model:
    """The network of a cuda-convnet layer file (and its parameter file) as a Keras model
    taking (height, width, channels) images and giving the softmax layer's output."""
    layers_path, params_path = Path(layers_cfg), Path(params_cfg)
    definitions, parameters = _read(layers_path), _read(params_path)
    inputs = keras.Input(input_shape, name="data")
    outputs: dict[str, keras.KerasTensor] = {}
    model_output = None
    for name in definitions.sections():
        section = _Section(layers_path, name, dict(definitions[name]))
        kind = section.get("type", str)
        if kind not in KEYS:
            raise section.error("type", f"{kind!r} is not a layer type this builds "
                                        f"({', '.join(sorted(KEYS))})")
        unknown = sorted(set(section.values) - KEYS[kind] - {"type"})
        if unknown:
            raise section.error(unknown[0], f"not a key this builds for type {kind}")
        if kind == "data":
            if section.get("dataIdx") == 0:
                outputs[name] = inputs
            continue
        sources = [source.strip() for source in section.get("inputs", str).split(",")]
        missing = [source for source in sources
                   if source not in outputs and not definitions.has_section(source)]
        if missing:
            raise section.error("inputs", f"no layer named {missing[0]!r}")
        if kind == "cost.logreg":
            continue  # the loss: labels and the softmax's output
        known = [outputs[source] for source in sources if source in outputs]
        if len(known) != len(sources):
            raise section.error("inputs", "names a layer defined after it")
        layer_params = (_Section(params_path, name, dict(parameters[name]))
                        if parameters.has_section(name) else None)
        tensor = _build(kind, section, layer_params, known)
        neuron = section.get("neuron", str, "")
        if neuron == "relu":
            tensor = keras.layers.Activation("relu", name=f"{name}_neuron")(tensor)
        elif neuron:
            raise section.error("neuron", f"{neuron!r}: only relu is built")
        outputs[name] = tensor
        if kind == "softmax":
            model_output = tensor
    if model_output is None:
        raise CudaConvnetError(f"{layers_path}: no softmax layer to end the network")
    return keras.Model(inputs, model_output, name=layers_path.stem)


def _build(kind: str, section: _Section, params: _Section | None, inputs: list):
    name = section.name
    if kind == "fc":
        units = section.get("outputs")
        init = keras.initializers.RandomNormal(stddev=section.get("initW", float, 0.01))
        parts = [keras.layers.Dense(units, kernel_initializer=init, use_bias=False,
                                    name=f"{name}_w{i}")(keras.layers.Flatten()(tensor))
                 for i, tensor in enumerate(inputs)]
        summed = parts[0] if len(parts) == 1 else keras.layers.Add()(parts)
        return _Bias(section.get("initB", float, 0.0), name=name)(summed)
    if kind == "softmax":
        if len(inputs) != 1:
            raise section.error("inputs", "softmax takes one input")
        return keras.layers.Softmax(name=name)(inputs[0])
    if len(inputs) != 1:
        raise section.error("inputs", f"{kind} over several inputs is not built yet")
    tensor = inputs[0]
    channels = section.get("channels", int, tensor.shape[-1])
    if channels != tensor.shape[-1]:
        raise section.error("channels", f"{channels}, but its input has {tensor.shape[-1]}")
    if kind == "conv":
        size, stride, pad = (section.get("filterSize"), section.get("stride", int, 1),
                             section.get("padding", int, 0))
        if not section.get("sharedBiases", int, 1):
            raise section.error("sharedBiases", "0 (a bias per position) is not built yet")
        side = tensor.shape[1]
        modules = 1 + math.ceil((2 * pad + side - size) / stride)  # layer.py 885
        extra = (modules - 1) * stride + size - (side + 2 * pad)
        padded = keras.layers.ZeroPadding2D(((pad, pad + extra), (pad, pad + extra)),
                                            name=f"{name}_pad")(tensor)
        return keras.layers.Conv2D(
            section.get("filters"), size, strides=stride, name=name,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=section.get("initW", float)),
            bias_initializer=keras.initializers.Constant(section.get("initB", float, 0.0)),
        )(padded)
    if kind == "pool":
        mode, start = section.get("pool", str), section.get("start", int, 0)
        if mode not in ("max", "avg"):
            raise section.error("pool", f"{mode!r}: max or avg")
        if start != 0:
            raise section.error("start", f"{start}: only 0 is built yet")
        size, stride = section.get("sizeX"), section.get("stride")
        outputs = section.get("outputsX", int, 0) or pool_outputs(tensor.shape[1], start,
                                                                   size, stride)
        return ConvNetPool(mode, size, stride, outputs, name=name)(tensor)
    # rnorm, cmrnorm: scale and pow live in the parameter file (layer.py 1035-1037).
    if params is None:
        raise CudaConvnetError(f"{section.path}: [{name}] needs its section in the "
                               f"parameter file (scale, pow)")
    size, scale, power = (section.get("size"), params.get("scale", float),
                          params.get("pow", float))
    if kind == "rnorm":
        return ConvNetNorm(size, scale, power, name=name)(tensor)
    if size % 2 == 0:  # the maps f - size/2 .. f + size/2 - 1: not centred
        raise section.error("size", f"{size}: only an odd size is built yet")
    return LocalResponseNormalization(1.0, size, scale / size, power, name=name)(tensor)


@keras.saving.register_keras_serializable(package="keras_alexnet")
class _Bias(keras.layers.Layer):
    """An fc layer's one bias vector, added after its inputs' products are summed."""

    def __init__(self, initial: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = initial

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],),
                                    initializer=keras.initializers.Constant(self.initial))

    def call(self, inputs):
        return inputs + self.bias

    def get_config(self) -> dict:
        return {**super().get_config(), "initial": self.initial}
