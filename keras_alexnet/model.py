"""The two-tower AlexNet of [paper §3, Figure 2] as a Keras 3 functional model: its layers,
and the topology a checkpoint must share with a config."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_alexnet import checkpoints
from keras_alexnet.config import LAYERS, AlexNetConfig
from keras_alexnet.errors import AlexNetError, CheckpointError
from keras_alexnet.layers import LocalResponseNormalization, TowerLayer
from keras_alexnet.network import FEATURES, OUTPUT, AlexNet, ContractCarrier, Probabilities

TOWERS = ("tower_a", "tower_b")
#: `convolutional_base`'s global poolings of pool5, as Keras applications name them.
POOLINGS = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}


def default_devices() -> tuple[str, str]:
    """Two GPUs when two are visible, else both towers on the one device there is.

    Under a data-parallel `tf.distribute` strategy the strategy places the replicas,
    so the towers get no device of their own ("" is the empty device scope).
    """
    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return ("", "")
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= 2:
        return ("/GPU:0", "/GPU:1")
    return ("/GPU:0", "/GPU:0") if gpus else ("/CPU:0", "/CPU:0")


def _validate_devices(devices: Sequence[str]) -> tuple[str, str]:
    if isinstance(devices, str) or len(devices) != 2:
        raise AlexNetError(f"devices must be a pair (tower_a, tower_b), got {devices!r}")
    visible = {tf.DeviceSpec.from_string(d.name).to_string()
               for d in tf.config.list_logical_devices()}
    for device in devices:
        if device == "":
            continue
        try:
            spec = tf.DeviceSpec.from_string(device)
        except ValueError as error:
            raise AlexNetError(f"devices: cannot parse {device!r}: {error}") from error
        local = tf.DeviceSpec(device_type=spec.device_type,
                              device_index=spec.device_index or 0)
        if spec.job is None and local.to_string() not in visible:
            raise AlexNetError(
                f"devices: unknown device {device!r}; visible devices are "
                f"{sorted(visible)}")
    return tuple(devices)


def feature_map_sizes(config: AlexNetConfig) -> dict[str, int]:
    """Spatial size of each conv and pool output for the config's input size."""
    conv1 = config.conv1_output_size()
    pool1 = (conv1 - 3) // 2 + 1  # overlapping 3x3 stride-2 max-pooling [paper §3.4]
    pool2 = (pool1 - 3) // 2 + 1  # conv2..conv5 keep the size ("same" padding)
    pool5 = (pool2 - 3) // 2 + 1
    sizes = {"conv1": conv1, "pool1": pool1, "conv2": pool1, "pool2": pool2, "conv3": pool2,
             "conv4": pool2, "conv5": pool2, "pool5": pool5}
    return {**sizes, "conv6": pool5} if config.conv6 else sizes


def min_image_size(config: AlexNetConfig) -> int:
    """The smallest input size for which every pooling still has an output."""
    size = config.conv1_size
    while feature_map_sizes(dataclasses.replace(config, image_size=size))["pool5"] < 1:
        size += 1
    return size


def _validate_config(config: AlexNetConfig) -> None:
    if config.num_classes < 2:
        raise AlexNetError(f"num_classes must be at least 2, got {config.num_classes}")
    smallest = min_image_size(config)
    if config.image_size < smallest:
        raise AlexNetError(
            f"image_size must be at least {smallest} for conv1_pad={config.conv1_pad} "
            f"(three 3/2 max-poolings follow conv1), got {config.image_size}")
    if min(config.tower_filters()) < 1 or config.tower_units() < 1:
        smallest_width = 0.5 / min(*config.conv_filters, config.fc_units)
        raise AlexNetError(
            f"width must be more than {smallest_width:.4g} so that every tower keeps at "
            f"least one filter per layer, got {config.width}")


def build_network(config: AlexNetConfig | None = None, *, devices: Sequence[str] | None = None,
                seed: int | None = None, weights: str | os.PathLike | None = None,
                name: str = "alexnet", **overrides) -> AlexNet:
    """Builds the paper's AlexNet [paper §3.5, Figure 2].

    Args:
        config: the hyper-parameters; `AlexNetConfig()` is the paper's network
            (60,965,224 parameters with 1000 classes); `AlexNetConfig(conv6=True)` is
            its CNN* network, a sixth conv layer over pool5 [paper §6].  Keyword
            `overrides` replace single fields, e.g. `build_network(num_classes=10,
            image_size=64, width=0.125)`.
        devices: where `tower_a` and `tower_b` run, e.g. `("/GPU:0", "/GPU:1")`, as
            the paper's two GPUs.  Default: `default_devices()`.
        seed: makes the initial weights reproducible (each layer draws from its own
            seed derived from it); None draws them from Keras's global generator.
        weights: a checkpoint (`.keras` file or training run's model directory) of the
            same configuration to load the weights from; the model then also carries
            the checkpoint's input contract (`model.input_contract`).
        name: the model's name.

    Input: float32 RGB images of shape (image_size, image_size, 3), pixel values on
    the 0-255 scale with the training-set mean subtracted [paper §2]; the input
    pipeline (`keras_alexnet.data`) and the exported SavedModel do this.
    Output: softmax probabilities over `num_classes`, in float32.
    """
    config = dataclasses.replace(config or AlexNetConfig(), **overrides)
    _validate_config(config)
    devices = _validate_devices(default_devices() if devices is None else devices)
    source = None if weights is None else _checkpoint_of(config, weights)
    f1, f2, f3, f4, f5 = config.tower_filters()
    units = config.tower_units()
    classes = (config.num_classes - config.num_classes // 2, config.num_classes // 2)

    layer_seeds = itertools.count(0 if seed is None else seed * 1_000)

    def init(layer_name: str) -> dict:
        bias = config.bias_init if layer_name in config.biases_one else 0.0
        kernel_seed = None if seed is None else next(layer_seeds)
        return {"kernel_initializer": keras.initializers.RandomNormal(0.0, config.init_stddev,
                                                                      seed=kernel_seed),
                "bias_initializer": keras.initializers.Constant(bias)}

    def conv(name, filters, size, strides=1, padding="same"):
        return keras.layers.Conv2D(filters, size, strides, padding, activation="relu",
                                   name=name, **init(name))

    def lrn(name, channels, tower_index):
        keep = ((tower_index * channels, (tower_index + 1) * channels)
                if config.lrn_across_towers else None)
        return LocalResponseNormalization(config.lrn_k, config.lrn_n, config.lrn_alpha,
                                          config.lrn_beta, keep=keep, name=name)

    def pool(name):
        return keras.layers.MaxPooling2D(3, 2, name=name)  # overlapping [paper §3.4]

    def fc(name, units_, activation="relu"):
        return keras.layers.Dense(units_, activation=activation, name=name, **init(name))

    image = keras.Input((config.image_size, config.image_size, 3), name="image")
    padded = keras.layers.ZeroPadding2D((config.conv1_pad, config.conv1_pad),
                                        name="conv1_pad")(image)
    towers = list(zip(TOWERS, devices, strict=True))

    def each_tower(inputs, make_layer):
        """Applies one paper layer in both towers; `inputs[i]` feeds tower i, and
        `make_layer(i)` makes tower i's."""
        outputs = []
        for index, ((tower, device), tower_input) in enumerate(zip(towers, inputs,
                                                                   strict=True)):
            layer = make_layer(index)
            outputs.append(TowerLayer(layer, device, name=f"{tower}_{layer.name}")(tower_input))
        return outputs

    def normalise(x, name, channels):
        """LRN per tower, or over both towers' maps (`lrn_across_towers`)."""
        inputs = [x, x] if config.lrn_across_towers else x
        return each_tower(inputs, lambda i: lrn(name, channels, i))

    x = [padded, padded]
    x = each_tower(x, lambda i: conv("conv1", f1, config.conv1_size, config.conv1_stride,
                                     "valid"))
    x = normalise(x, "lrn1", f1)
    x = each_tower(x, lambda i: pool("pool1"))
    x = each_tower(x, lambda i: conv("conv2", f2, 5))
    x = normalise(x, "lrn2", f2)
    x = each_tower(x, lambda i: pool("pool2"))
    x = each_tower([x, x], lambda i: conv("conv3", f3, 3))  # reads both towers
    x = each_tower(x, lambda i: conv("conv4", f4, 3))
    x = each_tower(x, lambda i: conv("conv5", f5, 3))
    x = each_tower(x, lambda i: pool("pool5"))
    if config.conv6:  # CNN*: "over the last pooling layer" [paper §6], own tower
        x = each_tower(x, lambda i: conv("conv6", f5, 3))
    x = each_tower(x, lambda i: keras.layers.Flatten(name="flatten"))
    for layer in ("fc6", "fc7"):
        x = each_tower([x, x], lambda i, layer=layer: fc(layer, units))  # reads both towers
        x = each_tower(x, lambda i, layer=layer: keras.layers.Dropout(
            config.dropout, name=f"dropout{layer[-1]}"))
    logits = [TowerLayer(fc("fc8", n, activation=None), device, name=f"{tower}_fc8")(x)
              for (tower, device), n in zip(towers, classes, strict=True)]
    logits = keras.layers.Concatenate(name="fc8")(logits)
    probabilities = Probabilities("softmax", dtype="float32", name=OUTPUT)(logits)
    model = AlexNet(image, probabilities, name=name)
    if source is not None:
        model.set_weights(source.get_weights())
        model.input_contract = source.input_contract
    return model


def _checkpoint_of(config: AlexNetConfig, path: str | os.PathLike) -> keras.Model:
    """The checkpoint at `path`, refused before anything is built when it is not the
    network `config` describes."""
    source = checkpoints.load_model(path, compile=False)
    check_topology(source, config, path, "build_network(config) must match it")
    return source


def layers_of(model: keras.Model) -> tuple[str, ...]:
    """The learned layers `model` has, from the input up (`LAYERS`: conv6 in CNN*)."""
    names = {layer.name for layer in model.layers}
    return tuple(name for name in LAYERS if f"tower_a_{name}" in names)


def config_of(model: keras.Model) -> AlexNetConfig:
    """The `AlexNetConfig` a built AlexNet was made from (its width folded into the
    filter and unit counts; `biases_one` the paper's, `bias_init` theirs)."""
    inner = {name: model.get_layer(f"tower_a_{name}").layer for name in layers_of(model)}
    lrn = model.get_layer("tower_a_lrn1").layer
    return AlexNetConfig(
        num_classes=model.output_shape[-1], image_size=model.input_shape[1],
        conv1_pad=tuple(model.get_layer("conv1_pad").padding[0]),
        conv1_size=inner["conv1"].kernel_size[0], conv1_stride=inner["conv1"].strides[0],
        width=1.0,
        conv_filters=tuple(inner[f"conv{i}"].filters for i in range(1, 6)),
        fc_units=inner["fc6"].units, conv6="conv6" in inner,
        dropout=model.get_layer("tower_a_dropout6").layer.rate,
        lrn_k=lrn.k, lrn_n=lrn.n, lrn_alpha=lrn.alpha, lrn_beta=lrn.beta,
        lrn_across_towers=lrn.keep is not None,
        init_stddev=inner["fc8"].kernel_initializer.stddev,
        bias_init=inner["fc6"].bias_initializer.value)


def _topology(config: AlexNetConfig) -> dict[str, object]:
    """What a checkpoint must share with a config to be used as that config (CNN*'s
    conv6 first: a network with it and one without differ in kind, whatever else)."""
    return {"conv6 (CNN*)": "yes" if config.conv6 else "no",
            "classes": config.num_classes, "input size": config.image_size,
            "conv1 padding": tuple(config.conv1_pad),
            "conv1 kernel and stride": (config.conv1_size, config.conv1_stride),
            "filters per tower (conv1..conv5)": config.tower_filters(),
            "fc6/fc7 units per tower": config.tower_units()}


def check_topology(model: keras.Model, config: AlexNetConfig, source: str | os.PathLike,
                   remedy: str, *, classes: bool = True) -> None:
    """A CheckpointError naming `source`, the first difference and `remedy` when
    `model` (loaded from `source`) is not the network `config` describes; `classes`
    False leaves the class count out (a new classifier is coming)."""
    found, wanted = _topology(config_of(model)), _topology(config)
    for name, value in wanted.items():
        if found[name] != value and (classes or name != "classes"):
            raise CheckpointError(f"{source}: the checkpoint has {name} {found[name]} but the "
                                  f"config gives {value}; {remedy}")


def fc7_features(model: keras.Model) -> keras.Model:
    """A model from the same input to fc7's 4096 activations (both towers, after ReLU).

    The paper compares images by the Euclidean distance of these vectors [paper §6.1,
    Figure 4 right]; they feed the image-retrieval picture and the `features` signature.
    """
    _require_layer(model, "tower_a_fc7", "no fc7 (built with include_top=False, it ends at "
                   "pool5)")
    towers = [model.get_layer(f"{tower}_fc7").output for tower in TOWERS]
    features = keras.layers.Concatenate(name="fc7_features")(towers)
    return keras.Model(model.input, features, name=f"{model.name}_fc7")


def classifier(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """fc8's weights over all classes: kernel (fc7 units of both towers, classes) and
    bias (classes,); tower_a holds the first classes, tower_b the rest [paper §3.5]."""
    weights = [model.get_layer(f"{tower}_fc8").get_weights() for tower in TOWERS]
    return (np.concatenate([kernel for kernel, _ in weights], axis=-1),
            np.concatenate([bias for _, bias in weights]))


def set_classifier(model: keras.Model, kernel: np.ndarray, bias: np.ndarray) -> None:
    """Writes a (fc7 units, classes) kernel and its bias into both towers' fc8, each
    tower's share of the classes (`classifier`'s layout)."""
    start = 0
    for tower in TOWERS:
        layer = model.get_layer(f"{tower}_fc8")
        width = layer.layer.units
        layer.set_weights([kernel[:, start:start + width].astype(np.float32),
                           bias[start:start + width].astype(np.float32)])
        start += width


def convolutional_base(model: keras.Model, pooling: str | None = None) -> AlexNet:
    """The convolutional part of `model` (conv1..pool5, and conv6 in CNN*; its own
    layers and weights), carrying its input contract, as Keras applications give with
    `include_top=False`.

    Output: both towers' last maps (pool5, or conv6 in CNN*) concatenated, (pool5, pool5,
    2 x conv5 filters per tower): 6x6x256 for the paper's network [paper §3.5]; with
    `pooling` "avg" or "max", their global average or maximum, (2 x conv5 filters per
    tower,).
    """
    check_pooling(pooling)
    _require_layer(model, "tower_a_pool5", "no tower_a_pool5 (give it a whole AlexNet)")
    last = "conv6" if "conv6" in layers_of(model) else "pool5"
    maps = keras.layers.Concatenate(name=last)(
        [model.get_layer(f"{tower}_{last}").output for tower in TOWERS])
    if pooling is not None:
        maps = POOLINGS[pooling](name=f"{pooling}_pool")(maps)
    contract = getattr(model, "input_contract", None)
    features = ContractCarrier(input_contract=contract, dtype="float32", name=FEATURES)(maps)
    return AlexNet(model.input, features, name=model.name)


def check_pooling(pooling: str | None) -> None:
    """An AlexNetError naming the choices when `pooling` is not one of them."""
    if pooling is not None and pooling not in POOLINGS:
        raise AlexNetError(f"pooling must be None, {' or '.join(map(repr, POOLINGS))}, got "
                           f"{pooling!r}")


def _require_layer(model: keras.Model, layer: str, lacking: str) -> None:
    """An AlexNetError saying that `model` has `lacking` when it has no `layer`."""
    if layer not in {each.name for each in model.layers}:
        raise AlexNetError(f"model {model.name!r} has {lacking}")
