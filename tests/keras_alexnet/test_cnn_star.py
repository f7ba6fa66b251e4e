"""The CNN* network, "an extra sixth convolutional layer over the last pooling layer"
[paper §6] (`AlexNetConfig(conv6=True)`, `train --conv6`), and the recipe of the paper's
"1 CNN*" row: pre-trained on a tar of per-class tars (the Fall 2011 release's layout),
then fine-tuned on ILSVRC-2012 [paper §6]."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from keras_alexnet import AlexNetConfig, build_model, checkpoints, finetune, reduced_config
from keras_alexnet.commands import main as alexnet_main
from keras_alexnet.errors import CheckpointError
from keras_alexnet.model import TOWERS, config_of, convolutional_base, layers_of
from tfrecords_tools.__main__ import main as tfrecords_main
from tfrecords_tools.sample import make_sample_archives

CPU = ("/CPU:0", "/CPU:0")


@pytest.fixture(scope="module")
def cnn_star():
    return build_model(AlexNetConfig(conv6=True), devices=CPU)


def neurons(model, layer):
    return sum(int(np.prod(model.get_layer(f"{tower}_{layer}").output.shape[1:]))
               for tower in TOWERS)


def test_conv6_adds_its_parameters_and_neurons_and_nothing_else(cnn_star):
    # Per tower, 128 filters of 3x3 over its own 128 pool5 maps, and their biases.
    conv6_parameters = 2 * (3 * 3 * 128 * 128 + 128)
    assert cnn_star.count_params() == 60_965_224 + conv6_parameters  # [paper §1]
    # 6x6 maps, as pool5 (fc6 reads as many values as in the paper's network).
    expected = {"conv1": 290_400, "conv2": 186_624, "conv3": 64_896, "conv4": 64_896,
                "conv5": 43_264, "conv6": 6 * 6 * 256, "fc6": 4096, "fc7": 4096, "fc8": 1000}
    assert {layer: neurons(cnn_star, layer) for layer in expected} == expected
    assert layers_of(cnn_star) == AlexNetConfig(conv6=True).layers()


def test_conv6_reads_its_own_towers_pool5_and_feeds_fc6(cnn_star):
    def sources(layer):
        node = cnn_star.get_layer(layer)._inbound_nodes[0]
        return sorted(t._keras_history.operation.name for t in node.input_tensors)

    assert sources("tower_a_conv6") == ["tower_a_pool5"]
    assert sources("tower_b_conv6") == ["tower_b_pool5"]
    assert sources("tower_b_flatten") == ["tower_b_conv6"]
    assert sources("tower_a_fc6") == ["tower_a_flatten", "tower_b_flatten"]
    conv6 = cnn_star.get_layer("tower_a_conv6").layer
    assert (conv6.kernel_size, conv6.strides, conv6.padding) == ((3, 3), (1, 1), "same")


def conv_same_relu(maps, kernel, bias):
    """numpy: a 3x3 stride-1 convolution with a one-pixel zero pad, then ReLU."""
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = maps.shape[1:3]
    out = sum(np.einsum("nhwc,cf->nhwf", padded[:, i:i + height, j:j + width], kernel[i, j])
              for i in range(3) for j in range(3))
    return np.maximum(out + bias, 0)


def test_the_convolutional_part_of_cnn_star_ends_at_conv6():
    # 128x128 inputs: pool5 is 3x3, so that the pad and every tap of the 3x3 count.
    model = build_model(reduced_config(conv6=True, image_size=128), devices=CPU, seed=3)
    images = np.random.default_rng(0).normal(0, 60, (2, 128, 128, 3)).astype(np.float32)
    pool5 = keras.Model(model.input, [model.get_layer(f"{t}_pool5").output for t in TOWERS])
    expected = np.concatenate([
        conv_same_relu(np.asarray(maps, np.float64),
                       *(np.asarray(w, np.float64)
                         for w in model.get_layer(f"{tower}_conv6").get_weights()))
        for tower, maps in zip(TOWERS, pool5.predict(images, verbose=0), strict=True)], -1)
    features = convolutional_base(model).predict(images, verbose=0)
    assert features.shape == (2, 3, 3, 2 * 16)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    assert np.count_nonzero(features) > features.size // 4  # not all dead


def test_a_checkpoint_keeps_conv6_and_another_config_is_refused(tmp_path):
    config = reduced_config(conv6=True, bias_init=0.1)
    path = tmp_path / "cnn_star.keras"
    build_model(config, devices=CPU, seed=0).save(path)
    loaded = checkpoints.load_model(path, compile=False)
    assert (config_of(loaded).conv6, config_of(loaded).bias_init) == (True, 0.1)
    with pytest.raises(CheckpointError, match=r"cnn_star.keras: the checkpoint has conv6 "
                                              r"\(CNN\*\) yes but the config gives no"):
        build_model(reduced_config(), weights=path)
    # Fine-tuning with --conv6 from a network without it (train --conv6 --init-from):
    # conv6 is named first, before the other fields the flags leave at their defaults.
    plain = build_model(reduced_config(num_classes=3), devices=CPU)
    with pytest.raises(CheckpointError, match=r"plain.keras: the checkpoint has conv6 "
                                              r"\(CNN\*\) no but the config gives yes"):
        finetune.initialise_from(finetune.Source(tmp_path / "plain.keras", "", plain),
                                 (("", "a"), ("", "b")), config=AlexNetConfig(conv6=True))


def test_freezing_counts_conv6_among_the_layers_below():
    model = build_model(reduced_config(conv6=True), devices=CPU)
    assert sorted(finetune.freeze(model, "conv6")) == sorted(
        f"{tower}_conv{i}" for tower in TOWERS for i in range(1, 7))
    assert not model.get_layer("tower_b_conv6").trainable
    assert model.get_layer("tower_a_fc6").trainable
    with pytest.raises(CheckpointError, match=r"cannot freeze 'conv6': the layers are "
                                              r"conv1, conv2, conv3, conv4, conv5, fc6, fc7"):
        finetune.freeze(build_model(reduced_config(), devices=CPU), "conv6")


@pytest.mark.slow
def test_the_cnn_star_recipe_end_to_end(tmp_path, capsys):
    """Convert a Fall-2011-shaped tar (per-class tars, no devkit), pre-train `--conv6` on
    it, convert ILSVRC-2012-shaped archives, fine-tune on them `--init-from` the
    pre-trained run, evaluate: the README's commands, with the reduced network."""
    fall11 = make_sample_archives(tmp_path / "fall11", num_classes=6, train_per_class=12,
                                  val_per_class=1, test_images=1, seed=1)
    whole = shutil.move(fall11.train, tmp_path / "fall11_whole.tar")
    ilsvrc = make_sample_archives(tmp_path / "ilsvrc", num_classes=4, train_per_class=8,
                                  val_per_class=3, test_images=1, seed=2)
    for source, output in ((whole, "fall11-shards"), (ilsvrc.directory, "ilsvrc-shards")):
        assert tfrecords_main(["convert", str(source), str(tmp_path / output), "--size", "73",
                               "--splits", "train", *(["validation"] if source != whole
                                                      else []), "-j", "1", "--quiet"]) == 0
    quick = ["--epochs", "1", "--batch-size", "8", "--no-tensorboard", "--backup-every", "0"]
    pretrain, tuned = tmp_path / "cnn_star_fall11", tmp_path / "cnn_star"
    assert alexnet_main(["train", str(tmp_path / "fall11-shards"), str(pretrain), "--reduced",
                         "--conv6", "--seed", "1", *quick]) == 0
    assert alexnet_main(["train", str(tmp_path / "ilsvrc-shards"), str(tuned),
                         "--init-from", str(pretrain), "--seed", "2", *quick]) == 0
    capsys.readouterr()
    assert alexnet_main(["evaluate", str(tuned), str(tmp_path / "ilsvrc-shards"),
                         "--center-only", "--output", str(tmp_path / "eval.json")]) == 0

    before = checkpoints.load_model(pretrain, compile=False)
    after = checkpoints.load_model(tuned, compile=False)
    assert "conv6" in layers_of(before) and "conv6" in layers_of(after)
    assert before.output_shape[-1] == 6 and after.output_shape[-1] == 4  # a new fc8
    assert after.input_contract.wnids == list(ilsvrc.wnids)
    source = json.loads((tuned / "run.json").read_text())["init_from"]["path"]
    assert source == str(checkpoints.resolve(pretrain))
    # conv6 came from the pre-trained run: moved by fine-tuning's steps at lr 0.001, but
    # far closer to it than to a fresh draw.
    trained, tuned_conv6 = (np.asarray(model.get_layer("tower_a_conv6").layer.kernel)
                            for model in (before, after))
    fresh = np.asarray(build_model(reduced_config(conv6=True, num_classes=4), devices=CPU,
                                   seed=9).get_layer("tower_a_conv6").layer.kernel)
    moved = np.linalg.norm(tuned_conv6 - trained)
    assert moved < 0.1 * np.linalg.norm(fresh - trained)
    assert json.loads((tmp_path / "eval.json").read_text())["images"] == 12
