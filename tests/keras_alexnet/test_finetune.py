"""Fine-tuning (`fit(init_from=...)`, `train --init-from`): a new run from another run's
weights, with the new data's classes [paper §6; Caffe's finetune_flickr_style]."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest

import keras_alexnet
from keras_alexnet import checkpoints, finetune
from keras_alexnet.config import FINE_TUNING_LEARNING_RATE, PRINTED_LRN, PRINTED_LRN_ALPHA
from keras_alexnet.model import config_of, convolutional_base, layers_of
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, make_dataset

QUICK = {**FIT_ARGS, "epochs": 1, "steps_per_epoch": 2, "validation_steps": 1,
         "backup_every": 0}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 4-class run trained for two steps, its LRN the printed equation's, as every
    checkpoint written before the authors' form became the default."""
    root = tmp_path_factory.mktemp("source")
    data = make_dataset(root / "data", num_classes=4, train_per_class=8,
                        validation_per_class=2)
    keras_alexnet.fit(data, root / "run", config=dataclasses.replace(REDUCED, **PRINTED_LRN),
                      **QUICK)
    return root / "run"


def lrn_alphas(model):
    return {model.get_layer(f"{tower}_{lrn}").layer.alpha for tower in finetune.TOWERS
            for lrn in ("lrn1", "lrn2")}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("three") / "data", num_classes=3,
                        train_per_class=8, validation_per_class=2)


def weights_of(model, layer):
    return [np.asarray(w) for tower in finetune.TOWERS
            for w in model.get_layer(f"{tower}_{layer}").get_weights()]


def test_a_new_top_for_other_classes_and_every_other_layer_copied(source, three_classes):
    original = checkpoints.load_model(source, compile=False)
    model = finetune.initialise_from(finetune.read_source(source),
                                     tuple((f"n{i:08d}", f"new {i}") for i in range(3)))
    assert model.output_shape[-1] == 3
    for layer in layers_of(original)[:-1]:
        for copied, trained in zip(weights_of(model, layer), weights_of(original, layer),
                                   strict=True):
            np.testing.assert_array_equal(copied, trained, err_msg=layer)
    contract = model.input_contract
    assert contract.names == ["new 0", "new 1", "new 2"]
    assert contract.mean_rgb == original.input_contract.mean_rgb  # the source's preprocessing
    assert config_of(model) == config_of(original).__class__(
        **{**config_of(original).__dict__, "num_classes": 3})
    assert lrn_alphas(model) == {PRINTED_LRN_ALPHA}  # the source's LRN, not the default


def test_the_same_classes_keep_fc8_too(source):
    original = checkpoints.load_model(source, compile=False)
    assert lrn_alphas(original) == {PRINTED_LRN_ALPHA}  # loaded as it was written
    model = finetune.initialise_from(finetune.read_source(source),
                                     original.input_contract.classes)
    images = np.random.default_rng(0).normal(0, 50, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               original.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_the_same_classes_in_another_order_keep_fc8_with_its_units_reordered(source):
    original = checkpoints.load_model(source, compile=False)
    reordered = tuple(reversed(original.input_contract.classes))
    model = finetune.initialise_from(finetune.read_source(source), reordered)
    images = np.random.default_rng(1).normal(0, 50, (3, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               original.predict(images, verbose=0)[:, ::-1], rtol=1e-5,
                               atol=1e-6)


def test_a_convolutional_base_is_refused_as_a_source_naming_what_it_lacks(source, tmp_path):
    base = convolutional_base(checkpoints.load_model(source, compile=False))
    base.save(tmp_path / "base.keras")
    with pytest.raises(ValueError, match=r"base\.keras: the convolutional part of a network "
                                         r"\(its layers: conv1, conv2, conv3, conv4, conv5; "
                                         r"no fc6, fc7, fc8\), which cannot classify"):
        finetune.initialise_from(finetune.read_source(tmp_path / "base.keras"),
                                 (("a", "a"), ("b", "b")))


@pytest.mark.slow
def test_a_run_written_with_the_printed_lrn_resumes_with_it(source, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(source, run)
    history = keras_alexnet.fit(source.parent / "data", run, **{**QUICK, "epochs": 2})
    assert history.epoch == [1]
    assert lrn_alphas(history.model) == {PRINTED_LRN_ALPHA}
    assert lrn_alphas(checkpoints.load_model(run, compile=False)) == {PRINTED_LRN_ALPHA}


@pytest.mark.slow
def test_fine_tuning_run_freezes_records_its_source_and_resumes(source, three_classes,
                                                                 tmp_path):
    run = tmp_path / "tuned"
    source_file = checkpoints.resolve(source)
    options = {k: v for k, v in QUICK.items() if k != "learning_rate"}
    # Caffe's recipe: the new fc8 at 10x the rate (the default's probe: test_probe.py).
    history = keras_alexnet.fit(three_classes, run, init_from=str(source), freeze="conv5",
                                recipe="caffe", **options)
    model = history.model
    original = checkpoints.load_model(source, compile=False)
    for layer in ("conv1", "conv5"):  # frozen: unchanged by two steps
        for now, before in zip(weights_of(model, layer), weights_of(original, layer),
                               strict=True):
            np.testing.assert_array_equal(now, before, err_msg=layer)
    assert any(not np.array_equal(a, b) for a, b in zip(
        weights_of(model, "fc6"), weights_of(original, "fc6"), strict=True))
    assert float(model.optimizer.learning_rate) == pytest.approx(FINE_TUNING_LEARNING_RATE)
    multipliers = model.optimizer.learning_rate_multipliers
    assert sorted(multipliers.values()) == [10.0, 10.0, 20.0, 20.0]
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["init_from"] == {
        "path": str(source_file), "sha256": hashlib.sha256(source_file.read_bytes()).hexdigest(),
        "fc8": "caffe: a new fc8 from noise, learning 10x faster, its biases 20x"}
    # A rerun resumes the fine-tuning run, not the source: its own checkpoint, kept frozen.
    history = keras_alexnet.fit(three_classes, run, **{**options, "epochs": 2})
    assert history.epoch == [1]
    resumed = history.model
    assert not resumed.get_layer("tower_a_conv3").trainable
    assert lrn_alphas(model) == lrn_alphas(resumed) == {PRINTED_LRN_ALPHA}
    assert resumed.optimizer.learning_rate_multipliers == multipliers
    for now, before in zip(weights_of(resumed, "conv4"), weights_of(original, "conv4"),
                           strict=True):
        np.testing.assert_array_equal(now, before)


def test_refusals_name_both_sides(source, three_classes, tmp_path):
    with pytest.raises(ValueError, match="freeze 'conv5' needs init_from"):
        keras_alexnet.fit(three_classes, tmp_path, freeze="conv5", **QUICK)
    with pytest.raises(ValueError, match=r"freeze must be one of \('conv1', .*'fc7'\), got "
                                         r"'fc9'"):
        keras_alexnet.fit(three_classes, tmp_path, init_from=str(source), freeze="fc9", **QUICK)
    wider = keras_alexnet.reduced_config(num_classes=3, image_size=96)
    with pytest.raises(ValueError, match=r"the checkpoint has input size 64 but the config "
                                         r"gives 96; fine-tune without a config"):
        keras_alexnet.fit(three_classes, tmp_path, config=wider, init_from=str(source),
                          **QUICK)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        keras_alexnet.fit(three_classes, tmp_path, init_from=str(tmp_path / "nowhere"),
                          **QUICK)
    assert not checkpoints.list_checkpoints(tmp_path)
