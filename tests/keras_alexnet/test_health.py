"""keras_alexnet.health: a run that is not learning says so, early and once; one that
learns does not."""

import dataclasses
import json
import math
import re
import warnings

import keras
import numpy as np
import pytest
from scipy import stats

import keras_alexnet
from keras_alexnet import data, hardware, health, probe
from tests.fakes import write_cpuinfo
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("health") / "data")


class Losses(keras.callbacks.Callback):
    """The loss each step logs (the epoch's running mean), by step."""

    def __init__(self):
        super().__init__()
        self.by_step = []

    def on_train_batch_end(self, batch, logs=None):
        self.by_step.append(float(logs["loss"]))


def train(dataset, model_dir, config=REDUCED, callbacks=(), **options):
    """fit's TrainingWarnings, the History and the logged losses."""
    losses = Losses()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = keras_alexnet.fit(dataset, model_dir, config=config,
                                    callbacks=[losses, *callbacks],
                                    **{**FIT_ARGS, "verbose": 0, **options})
    found = [str(w.message) for w in caught if issubclass(w.category, health.TrainingWarning)]
    return found, history, losses.by_step


def test_the_spread_is_zero_for_equal_outputs_and_the_total_variation_otherwise():
    uniform = np.full((5, 4), 0.25)
    assert health.output_spread(uniform) == 0
    # Two images, two different classes for sure: each is 1/2 from their mean.
    assert health.output_spread(np.eye(4)[[0, 2]]) == pytest.approx(0.5)
    # A class for each of n images: each is 1 - 1/n from the mean, the most there is.
    assert health.output_spread(np.eye(8)) == pytest.approx(1 - 1 / 8)


def test_at_chance_agrees_with_the_binomial_test():
    classes, images = 10, 1000
    assert health.at_chance(0.1, classes, images)  # one class named for all, balanced data
    for correct in range(80, 200):
        # one-sided binomial test of "better than 1/classes"
        p_value = stats.binom.sf(correct - 1, images, 1 / classes)
        if p_value > 0.05:
            assert health.at_chance(correct / images, classes, images), correct
        if p_value < 0.01:
            assert not health.at_chance(correct / images, classes, images), correct


@pytest.mark.slow
def test_a_run_that_blows_up_warns_once_naming_the_step_the_loss_and_ln_classes(dataset,
                                                                             tmp_path):
    # Ten times the tests' learning rate with the paper's biases of 1: the loss jumps in
    # the first steps, then the outputs die (the probes at steps 10 and 15 see one output
    # for all), yet one warning (the collapse at the epoch's end is the same news).
    found, _, losses = train(dataset, tmp_path, learning_rate=0.05, epochs=1,
                             steps_per_epoch=3 * health.PROBE_EVERY, validation_steps=1,
                             config=dataclasses.replace(REDUCED, bias_init=1.0))
    reference = [max(math.log(4), losses[0]) for _ in losses]
    step = next(i + 1 for i, (loss, r) in enumerate(zip(losses, reference, strict=True))
                if loss > 3 * r)
    assert len(found) == 1, found
    assert found[0].startswith(f"step {step}: the loss rose to {losses[step - 1]:.4g},")
    assert "ln(4) = 1.3863 (a uniform guess)" in found[0] and "--bias-init 0.1" in found[0]
    assert "a learning rate below 0.05" in found[0]


@pytest.mark.slow
def test_a_run_stuck_at_ln_classes_warns_that_it_is_not_learning_and_ends_at_chance(
        dataset, tmp_path, capsys):
    # Weights of N(0, 1e-6): every image gives the same output and the loss wanders
    # around ln(4) with each batch's class mix; nothing moves the network off it.
    config = dataclasses.replace(REDUCED, init_stddev=1e-6, bias_init=1.0)  # the paper's biases
    found, history, losses = train(dataset, tmp_path, config=config, epochs=1,
                                   steps_per_epoch=2 * health.PROBE_EVERY, verbose=2)
    assert len(found) == 1, found  # the collapse at the epoch's end is the same news
    step = 2 * health.PROBE_EVERY
    assert found[0].startswith(f"step {step}: every image gets the same output since step "
                               f"{health.PROBE_EVERY} ")
    assert f"the loss is {losses[step - 1]:.4g}, ln(4) = 1.3863 (a uniform guess)" in found[0]
    assert "start again with --bias-init 0.1" in found[0]
    # It is true of the validation images too, which the probe never saw.
    images = np.concatenate([x for x, _ in data.evaluation_dataset(
        dataset, REDUCED.image_size, 64, num_classes=4, contract=history.model.input_contract)])
    outputs = history.model.predict(images, verbose=0)
    assert np.ptp(outputs, axis=0).max() < 1e-4
    end = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"best validation top-1 error 0\.7500 \(epoch 1\), no better than "
                     r"chance \(0\.7500 error, a guess among 4 classes\): the network has "
                     r"not learned; start again with --bias-init 0\.1", end), end


@pytest.mark.slow
def test_a_run_that_learns_gives_no_warning_and_no_chance_remark(dataset, tmp_path, capsys,
                                                                 monkeypatch):
    # Past the first probes that could call it dead (steps 5, 10), in float32 on a CPU
    # without bfloat16 units.
    monkeypatch.setattr(hardware, "CPUINFO", write_cpuinfo(tmp_path, ""))
    found, history, _ = train(dataset, tmp_path / "run", epochs=1,
                              steps_per_epoch=4 * health.PROBE_EVERY, verbose=2)
    assert found == []
    assert history.history["val_top1"][-1] > 0.5  # it did learn
    end = capsys.readouterr().out.strip().splitlines()[-1]
    assert "best validation top-1 error" in end and "chance" not in end, end


class Started(Exception):
    """Raised by the first callback event: training was about to begin."""


class StopAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise Started


@pytest.mark.parametrize("flags, warned", [("", True), ("avx512f avx512_bf16", False)])
def test_mixed_bfloat16_on_a_cpu_without_bfloat16_units_warns_before_training(
        dataset, tmp_path, monkeypatch, flags, warned):
    path = write_cpuinfo(tmp_path, flags)
    monkeypatch.setattr(hardware, "CPUINFO", path)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(Started):
        warnings.simplefilter("always")
        keras_alexnet.fit(dataset, tmp_path / "run", config=REDUCED,
                          mixed_precision="mixed_bfloat16", callbacks=[StopAtStart()],
                          **{**FIT_ARGS, "verbose": 0})
    found = [str(w.message) for w in caught if issubclass(w.category, health.TrainingWarning)]
    assert len(found) == warned, found
    if warned:
        assert "mixed_bfloat16 on a CPU without AVX512_BF16 or AMX" in found[0]
        assert f"no avx512_bf16 or amx_bf16 in {path}" in found[0]


def test_the_verdict_never_says_not_learned_beside_an_error_below_chances():
    bees = 83 / 153  # the ants/bees photos: always "bees" is right on 54.2%
    guess = "always naming bees, the most frequent class"
    assert health.chance_verdict(0.9, 153, bees, guess) is None  # clearly learned
    # 0.4575 error is below chance's 0.4575163: not clearly better, never "not learned".
    near = health.chance_verdict(1 - 0.4575, 153, bees, guess)
    assert near == ("not clearly better than chance (0.4575 error, always naming bees, the "
                    "most frequent class; two standard errors on 153 images are 0.0806)")
    assert health.chance_verdict(0.5, 153, bees, guess) == (
        "no better than chance (0.4575 error, always naming bees, the most frequent "
        "class): the network has not learned")
    # Four images: even four right out of four would not tell (binomial: 1/16 by luck).
    for accuracy in (0.0, 0.5, 1.0):
        assert health.chance_verdict(accuracy, 4, 0.5, "a guess among 2 classes") == (
            "4 validation images are too few to tell it from chance (0.5000 error, a "
            "guess among 2 classes); hold out more")
    # The threshold agrees with the binomial test where the normal approximation holds.
    for correct in range(83, 153):
        p_value = stats.binom.sf(correct - 1, 153, bees)
        verdict = health.chance_verdict(correct / 153, 153, bees, guess)
        if p_value < 0.01:
            assert verdict is None, correct
        if p_value > 0.05:
            assert verdict is not None, correct


def test_a_run_with_four_validation_images_says_they_are_too_few(tmp_path, capsys):
    # Two classes, as the ants and bees: even 4 right of 4 happens by luck 1 time in 16.
    data_dir = make_dataset(tmp_path / "data", num_classes=2, train_per_class=8,
                            validation_per_class=2)
    train(data_dir, tmp_path / "run", config=dataclasses.replace(REDUCED, num_classes=2),
          epochs=1, steps_per_epoch=1, verbose=2)
    end = capsys.readouterr().out.strip().splitlines()[-1]
    assert end.endswith("), 4 validation images are too few to tell it from chance (0.5000 "
                        "error, a guess among 2 classes); hold out more"), end


def test_chance_is_the_most_frequent_validation_class_where_the_manifest_counts_them(
        tmp_path):
    from keras_alexnet.config import TrainingOptions
    from keras_alexnet.training import _chance, plan

    data_dir = make_dataset(tmp_path / "data", train_per_class=4, validation_per_class=1)
    (data_dir / "manifest.json").write_text(json.dumps({"splits": {"validation": {
        "class_counts": {"n00000000": 1, "n00000001": 5, "n00000002": 2, "n00000003": 2}}}}))
    chance, guess = _chance(plan(data_dir, tmp_path / "run", REDUCED,
                                 TrainingOptions(batch_size=16)))
    assert (chance, guess) == (0.5, "always naming class 1, the most frequent class")


def test_dead_fraction_counts_the_units_that_no_image_activates():
    maps = np.zeros((2, 3, 3, 4), np.float32)  # two images, 3x3 maps, four channels
    maps[1, 2, 0, 0] = 0.5  # channel 0: one position of one image
    maps[..., 2] = -1.0  # channel 2: negative everywhere (a dead ReLU's input)
    maps[..., 3] = 2.0  # channel 3: everywhere; channel 1: nowhere
    assert health.dead_fraction(maps) == 0.5
    assert health.dead_fraction(np.ones((5, 7))) == 0


def training_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, health.TrainingWarning)]


def _layer_outputs(model, images, layer):
    towers = keras.Model(model.input, [model.get_layer(f"{tower}_{layer}").output
                                       for tower in ("tower_a", "tower_b")])
    return np.concatenate([np.asarray(x) for x in towers(images, training=False)], axis=-1)


def _kill(model, layer):
    for tower in ("tower_a", "tower_b"):
        kernel, bias = model.get_layer(f"{tower}_{layer}").get_weights()
        model.get_layer(f"{tower}_{layer}").set_weights([np.zeros_like(kernel),
                                                         np.full_like(bias, -1.0)])


def test_unit_health_logs_each_layer_and_warns_once_when_a_layer_dies(dataset):
    from keras_alexnet.optimizer import PaperSGD

    model = keras_alexnet.build_model(REDUCED, devices=("", ""), seed=0)
    model.compile(optimizer=PaperSGD(0.02), loss="sparse_categorical_crossentropy")
    images, labels = next(iter(data.evaluation_dataset(dataset, 64, 32,
                                                       num_classes=4).take(1)))
    # A network that tells the images apart from the start: fc8 as a linear probe.
    probe.fit_head(model, data.evaluation_dataset(dataset, 64, 32, num_classes=4), 4)
    monitor = health.UnitHealth(images, labels)
    monitor.set_model(model)
    monitor.on_train_begin()
    logs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_epoch_end(0, logs)
    assert not training_warnings(caught)
    for layer in health.WATCHED:  # numpy's count on the towers' own outputs
        units = _layer_outputs(model, images, layer)
        alive = [(units[..., unit] > 0).any() for unit in range(units.shape[-1])]
        assert logs[f"dead_{layer}"] == pytest.approx(1 - np.mean(alive)), layer
    _kill(model, "fc7")  # every image then gets the one class fc8's biases favour
    model.optimizer.iterations.assign(health.WINDOW)  # past the learning monitor's steps
    for epoch in (1, 2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor.on_epoch_end(epoch, logs)
        found = training_warnings(caught)
        if epoch == 2:
            assert not found  # once each
            continue
        assert logs["dead_fc7"] == 1.0
        assert len(found) == 2, found
        assert found[0].startswith("epoch 2: 100% of fc7's units are dead (no one of 32 "
                                   "validation images activates them); start again with "
                                   "--bias-init 0.1")
        assert found[0].endswith("a learning rate below 0.02")
        assert re.match(r"epoch 2: 100% of 32 validation images get one class \(label \d\): "
                        r"the predictions have collapsed; start again", found[1])


def test_a_layer_dead_from_the_start_is_left_to_the_start_report(dataset):
    model = keras_alexnet.build_model(REDUCED, devices=("", ""), seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    images, labels = next(iter(data.evaluation_dataset(dataset, 64, 32,
                                                       num_classes=4).take(1)))
    _kill(model, "fc6")
    monitor = health.UnitHealth(images, labels, bias_advice=False)
    monitor.set_model(model)
    monitor.on_train_begin()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_epoch_end(0, logs := {})
    assert logs["dead_fc6"] == 1.0
    assert [w for w in training_warnings(caught) if "fc6" in w] == []


def test_the_dead_fractions_reach_the_csv_log_and_tensorboard(dataset, tmp_path):
    import tensorflow as tf

    from keras_alexnet.resume import read_log

    train(dataset, tmp_path, epochs=1, steps_per_epoch=2, validation_steps=1,
          tensorboard=True)
    row = read_log(tmp_path)[0]
    assert {f"dead_{layer}" for layer in health.WATCHED} <= set(row)
    assert 0 <= float(row["dead_fc7"]) <= 1
    tags = {value.tag for path in (tmp_path / "tensorboard").rglob("*tfevents*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}
    assert {f"epoch_dead_{layer}" for layer in health.WATCHED} <= tags
