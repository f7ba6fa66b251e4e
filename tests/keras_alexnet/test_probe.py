"""keras_alexnet.probe: the linear probe that a fine-tuning run's new fc8 starts from
(the LP-FT recipe), checked against scikit-learn's logistic regression."""

import json
import warnings

import numpy as np
import pytest
import scipy.special
from sklearn.linear_model import LogisticRegression

import keras_alexnet
from keras_alexnet import checkpoints, data, health, probe
from keras_alexnet.model import build_network
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, make_dataset

QUICK = {**FIT_ARGS, "epochs": 1, "steps_per_epoch": 2, "validation_steps": 1,
         "backup_every": 0}


def blobs(rng, classes=3, per_class=40, dims=12):
    """Overlapping Gaussian clusters: a regression that is not separable, so that the
    optimum is finite and unique."""
    centres = rng.normal(0, 1.5, (classes, dims))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(0, 1.5, (len(labels), dims)), labels


def test_the_probe_is_scikit_learns_logistic_regression():
    features, labels = blobs(np.random.default_rng(0))
    kernel, bias, converged = probe.softmax_regression(features, labels, 3)
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(features, labels)
    assert converged
    np.testing.assert_allclose(scipy.special.softmax(features @ kernel + bias, axis=1),
                               reference.predict_proba(features), atol=2e-4)
    # Softmax weights are defined up to a shift per feature: compare centred ones.
    np.testing.assert_allclose(kernel.T - kernel.T.mean(axis=0),
                               reference.coef_ - reference.coef_.mean(axis=0), atol=2e-3)


def test_a_stronger_penalty_gives_smaller_weights():
    features, labels = blobs(np.random.default_rng(1))
    weak, _, _ = probe.softmax_regression(features, labels, 3, l2=1e-3)
    strong, _, _ = probe.softmax_regression(features, labels, 3, l2=1.0)
    assert np.abs(strong).sum() < 0.2 * np.abs(weak).sum()


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("probe") / "data", num_classes=6,
                        train_per_class=12, validation_per_class=4)


def test_fit_head_writes_the_regression_into_both_towers(six_classes):
    # Six classes: tower_a's fc8 scores the first three, tower_b's the other three.
    model = build_network(REDUCED.__class__(**{**REDUCED.__dict__, "num_classes": 6}),
                        devices=("", ""), seed=0)
    model.input_contract = keras_alexnet.contract.InputContract.from_data(six_classes, 64,
                                                                          "channel")
    images = data.evaluation_dataset(six_classes, 64, 16, num_classes=6, split="train",
                                     contract=model.input_contract)
    result = probe.fit_head(model, images, 6)
    features, labels = probe.fc7_activations(model, images)
    kernel, bias, _ = probe.softmax_regression(features, labels, 6)
    assert result.images == len(labels) == 72
    crops = np.concatenate([x for x, _ in images])
    np.testing.assert_allclose(model.predict(crops, verbose=0),
                               scipy.special.softmax(features @ kernel + bias, axis=1),
                               atol=1e-4)
    assert result.train_top1 == pytest.approx(
        float((np.argmax(features @ kernel + bias, axis=1) == labels).mean()))
    assert result.dead_fc7 == health.dead_fraction(features)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-source")
    data_dir = make_dataset(root / "data", num_classes=4, train_per_class=8,
                            validation_per_class=2)
    keras_alexnet.fit(data_dir, root / "run", config=REDUCED, **QUICK)
    return root / "run"


def fine_tune(source, data_dir, model_dir, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_alexnet.fit(data_dir, model_dir, init_from=source, **{**QUICK, **options})
    run = json.loads((model_dir / "run.json").read_text())
    return run, [str(w.message) for w in caught
                 if issubclass(w.category, health.TrainingWarning)]


@pytest.mark.slow
def test_the_default_recipe_starts_from_the_probe_and_says_so(source, six_classes, tmp_path,
                                                             capsys):
    run, _ = fine_tune(source, six_classes, tmp_path / "lp-ft", epochs=1, steps_per_epoch=1,
                       learning_rate=1e-9)
    report = capsys.readouterr().out
    assert run["options"]["recipe"] == "lp-ft"
    assert run["init_from"]["fc8"].startswith("lp-ft: the new fc8 fitted as a linear probe "
                                              "on fc7 of 72 training images")
    assert "  recipe      lp-ft: the new fc8 fitted" in report
    # One step at a rate of 1e-9 leaves the probe's head: the model scores the training
    # images as the regression on its own fc7 does.
    model = checkpoints.load_model(tmp_path / "lp-ft", compile=False)
    images = data.evaluation_dataset(six_classes, 64, 16, num_classes=6, split="train",
                                     contract=model.input_contract)
    features, labels = probe.fc7_activations(model, images)
    kernel, bias, _ = probe.softmax_regression(features, labels, 6)
    crops = np.concatenate([x for x, _ in images])
    np.testing.assert_allclose(model.predict(crops, verbose=0),
                               scipy.special.softmax(features @ kernel + bias, axis=1),
                               atol=1e-3)
    # One rate for every layer.
    assert not checkpoints.load_model(tmp_path / "lp-ft").optimizer.learning_rate_multipliers


def test_the_caffe_recipe_starts_fc8_from_noise_at_ten_times_the_rate(source, six_classes,
                                                                      tmp_path):
    run, _ = fine_tune(source, six_classes, tmp_path / "caffe", recipe="caffe")
    assert run["init_from"]["fc8"].startswith("caffe: a new fc8 from noise, learning 10x")
    model = checkpoints.load_model(tmp_path / "caffe")
    assert sorted(set(model.optimizer.learning_rate_multipliers.values())) == [10.0, 20.0]


@pytest.mark.slow
def test_new_classes_of_the_same_count_get_a_new_fc8(source, tmp_path):
    # Four classes again, but not the source's: its fc8 would score the wrong classes.
    other = make_dataset(tmp_path / "other", num_classes=4, train_per_class=8,
                         validation_per_class=2)
    labels = other / "labels.txt"
    labels.write_text(labels.read_text().replace("n0000", "n9999"))
    run, _ = fine_tune(source, other, tmp_path / "run")
    assert run["init_from"]["fc8"].startswith("lp-ft: the new fc8")
    same, _ = fine_tune(source, source.parent / "data", tmp_path / "same")
    assert same["init_from"]["fc8"] == "the source's fc8 kept (the data has the source's " \
                                       "classes)"


def test_a_source_whose_fc7_is_dead_on_the_new_photos_is_warned_of(source, six_classes,
                                                                     tmp_path):
    model = checkpoints.load_model(source)
    for tower in ("tower_a", "tower_b"):
        layer = model.get_layer(f"{tower}_fc7")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, np.where(np.arange(len(bias)) % 4, -1e4, bias)])
    model.save(tmp_path / "dead.keras")
    _, found = fine_tune(tmp_path / "dead.keras", six_classes, tmp_path / "run")
    dead = [w for w in found if "of the source's fc7 units are dead" in w]
    assert len(dead) == 1, found
    assert int(dead[0].split("%")[0]) >= 75 and "of 72 training images" in dead[0]
    assert "--bias-init 0.1" in dead[0]
