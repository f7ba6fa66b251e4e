"""The network of [paper §3, Figure 2]: counts, geometry, initialisation, serialisation."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_alexnet import AlexNetConfig, build_model, fc7_features, reduced_config
from keras_alexnet.commands import build_parser
from keras_alexnet.commands.train import _config
from keras_alexnet.config import CAFFE_GEOMETRY, PRINTED_LRN_ALPHA, small_photos_config
from keras_alexnet.errors import CheckpointError
from keras_alexnet.model import TOWERS, check_topology, config_of, min_image_size


@pytest.fixture(scope="module")
def paper_model():
    return build_model()


def conv_neurons(model, layer):
    """Neurons of one paper layer: both towers' outputs (before pooling) summed."""
    return sum(int(np.prod(model.get_layer(f"{tower}_{layer}").output.shape[1:]))
               for tower in TOWERS)


def test_paper_parameter_count(paper_model):
    assert paper_model.count_params() == 60_965_224


def test_paper_neuron_counts(paper_model):
    # [paper §3.5]; conv1's 253,440 in the paper is a misprint for 55*55*96.
    expected = {"conv1": 290_400, "conv2": 186_624, "conv3": 64_896, "conv4": 64_896,
                "conv5": 43_264, "fc6": 4096, "fc7": 4096, "fc8": 1000}
    assert {layer: conv_neurons(paper_model, layer) for layer in expected} == expected
    assert paper_model.get_layer("tower_a_conv1").output.shape[1:3] == (55, 55)
    assert paper_model.output.shape[1:] == (1000,)


def test_cross_tower_connections_follow_figure_2(paper_model):
    def sources(layer):
        node = paper_model.get_layer(layer)._inbound_nodes[0]
        return sorted(t._keras_history.operation.name for t in node.input_tensors)

    assert sources("tower_a_conv2") == ["tower_a_pool1"]
    assert sources("tower_b_conv3") == ["tower_a_pool2", "tower_b_pool2"]
    assert sources("tower_b_conv4") == ["tower_b_conv3"]
    assert sources("tower_a_fc6") == ["tower_a_flatten", "tower_b_flatten"]
    assert sources("tower_b_fc8") == ["tower_a_dropout7", "tower_b_dropout7"]


def test_caffe_geometry_also_gives_55(paper_model):
    caffe = build_model(**CAFFE_GEOMETRY)
    assert caffe.get_layer("tower_b_conv1").output.shape[1:3] == (55, 55)
    assert caffe.count_params() == paper_model.count_params()


def test_paper_initialisation():
    model = build_model(AlexNetConfig(width=0.5, num_classes=50, image_size=64))
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        for tower in TOWERS:
            inner = model.get_layer(f"{tower}_{layer}").layer
            kernel, bias = (np.asarray(w) for w in inner.get_weights())
            # Weights N(0, 0.01) [paper §5]
            assert abs(kernel.std() - 0.01) < 0.001, (layer, kernel.std())
            assert abs(kernel.mean()) < 0.001
            # Biases 1 in conv2, conv4, conv5 and the hidden fc layers, else 0 [paper §5]
            expected = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
            np.testing.assert_array_equal(bias, expected)


def test_bias_init_replaces_the_papers_ones_and_only_them():
    # 0.1 is Caffe's bvlc_alexnet value for the layers the paper starts at 1 [paper §5].
    model = build_model(reduced_config(bias_init=0.1, conv6=True), devices=("/CPU:0",) * 2)
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc6", "fc7", "fc8"):
        for tower in TOWERS:
            bias = np.asarray(model.get_layer(f"{tower}_{layer}").layer.bias)
            expected = 0.1 if layer in ("conv2", "conv4", "conv5", "conv6", "fc6", "fc7") \
                else 0.0
            np.testing.assert_array_equal(bias, np.float32(expected), err_msg=layer)
    assert config_of(model).bias_init == pytest.approx(0.1)


def test_the_model_flags_give_the_config():
    args = build_parser().parse_args(["train", "data", "run", "--reduced", "--bias-init", "0.1",
                                      "--printed-lrn", "--conv6"])
    config = _config(args)
    assert (config.bias_init, config.lrn_alpha, config.conv6) == (0.1, PRINTED_LRN_ALPHA, True)
    assert config.image_size == 64  # still the reduced network
    defaults = _config(build_parser().parse_args(["train", "data", "run", "--reduced"]))
    # The reduced network's biases start at Caffe's 0.1, the paper network's at 1 [paper §5].
    assert (defaults.bias_init, defaults.conv6) == (0.1, False)
    assert _config(build_parser().parse_args(["train", "data", "run", "--image-size",
                                              "227"])).bias_init == 1.0
    assert defaults.lrn_alpha == pytest.approx(PRINTED_LRN_ALPHA / 5)  # the authors' code


def test_reduced_config_keeps_topology():
    config = reduced_config()
    model = build_model(config)
    paper_names = {layer.name for layer in build_model().layers}
    assert {layer.name for layer in model.layers} == paper_names
    assert model.output.shape[1:] == (config.num_classes,)
    assert model.get_layer("tower_a_conv1").layer.filters == 6  # 48 / 8


def test_the_small_photos_network_reads_32x32_photos_with_a_5x5_conv1():
    config = _config(build_parser().parse_args(["train", "data", "run", "--network",
                                                "small-photos"]))
    assert config == small_photos_config()
    model = build_model(config, devices=("", ""))
    conv1 = model.get_layer("tower_a_conv1").layer
    assert (conv1.kernel_size, conv1.strides) == ((5, 5), (1, 1))

    def out(size, kernel, stride, pad=0):  # the output size of a valid window, by hand
        return (size + pad - kernel) // stride + 1

    conv1_size = out(28, 5, 1, pad=4)  # 28: a 2-pixel pad on each side keeps it
    pool1 = out(conv1_size, 3, 2)
    pool2 = out(pool1, 3, 2)
    pool5 = out(pool2, 3, 2)
    assert (conv1_size, pool1, pool2, pool5) == (28, 13, 6, 2)
    for layer, size in (("conv1", conv1_size), ("pool1", pool1), ("conv2", pool1),
                        ("pool2", pool2), ("conv5", pool2), ("pool5", pool5)):
        assert model.get_layer(f"tower_a_{layer}").output.shape[1:3] == (size, size), layer
    assert model.get_layer("tower_a_conv1").output.shape[-1] == 12  # 48 / 4
    assert config_of(model) == dataclasses.replace(config, width=1.0, conv_filters=(
        12, 32, 48, 48, 32), fc_units=512)  # the width folded into the counts
    # The paper network is not this one: a checkpoint of it is refused by name.
    with pytest.raises(CheckpointError, match="conv1 kernel and stride"):
        check_topology(model, dataclasses.replace(config, conv1_size=11, conv1_stride=4),
                       "small.keras", "use another")


def test_odd_class_count_splits_fc8_between_towers():
    model = build_model(reduced_config(num_classes=7))
    units = [model.get_layer(f"{tower}_fc8").layer.units for tower in TOWERS]
    assert units == [4, 3]
    assert model.output.shape[1:] == (7,)


def test_outputs_are_probabilities():
    model = build_model(reduced_config())
    images = np.random.default_rng(0).normal(0, 60, (4, 64, 64, 3)).astype("float32")
    probabilities = model.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert fc7_features(model).predict(images, verbose=0).shape == (4, 2 * 256)


def test_keras_file_round_trip(tmp_path):
    model = build_model(reduced_config(), devices=("/CPU:0", "/CPU:0"))
    images = np.random.default_rng(1).normal(0, 60, (3, 64, 64, 3)).astype("float32")
    path = tmp_path / "alexnet.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_layer("tower_b_conv3").device == "/CPU:0"
    assert restored.get_layer("tower_a_lrn2").layer.get_config()["beta"] == 0.75
    np.testing.assert_allclose(restored.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"image_size": 63}, "image_size must be at least 64"),
    ({"image_size": 66, "conv1_pad": (0, 0)}, "image_size must be at least 67"),
    ({"num_classes": 1}, "num_classes must be at least 2"),
    ({"width": 0.001}, "width must be more than"),
])
def test_bad_configuration_names_the_argument(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model(reduced_config(), **overrides)


def test_min_image_size_is_tight():
    config = AlexNetConfig()
    smallest = min_image_size(config)
    build_model(dataclasses.replace(reduced_config(), image_size=smallest))
    assert smallest == 64


@pytest.mark.parametrize("devices, message", [
    (("/GPU:7", "/CPU:0"), "unknown device '/GPU:7'"),
    (("/CPU:0",), "devices must be a pair"),
    ("/CPU:0", "devices must be a pair"),
    (("/CPU:0", "nonsense:::"), "devices: cannot parse"),
])
def test_bad_devices_are_named(devices, message):
    with pytest.raises(ValueError, match=message):
        build_model(reduced_config(), devices=devices)
