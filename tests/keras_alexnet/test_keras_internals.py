"""The Keras behaviour `keras_alexnet.keras_internals` relies on is still there: a Keras
upgrade that breaks an assumption fails here, saying which and where to look."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import keras_internals

BROKEN = (f"keras_alexnet/keras_internals.py was checked against Keras "
          f"{keras_internals.KERAS_CHECKED}; Keras {keras.__version__} changed this")


def tiny_model() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, kernel_initializer="ones")(inputs))


def test_keras_own_train_step_feeds_the_loss_metric_and_unscales_the_loss():
    model = tiny_model()
    model.compile("sgd", "mse")
    assert keras_internals.loss_tracker(model) is model._loss_tracker, \
        f"{BROKEN}: the metric Keras's train_step feeds is no longer the one named 'loss'"
    # track_loss multiplies compute_loss's value by the replica count, as Keras's own step
    # undoes the per-replica scaling of compute_loss.
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    assert "unscale_loss_for_distribution" in inspect.getsource(TensorFlowTrainer.train_step), \
        f"{BROKEN}: Keras's train_step no longer unscales the loss it tracks"


def test_the_step_reports_the_loss_and_metrics_keras_own_step_reports():
    images = np.random.default_rng(0).normal(0, 50, (8, 64, 64, 3)).astype(np.float32)
    labels = np.arange(8) % 10
    results = []
    for run_eagerly in (False, True):  # ours (tf.gradients), then Keras's own
        model = keras_alexnet.build_model(keras_alexnet.reduced_config(dropout=0.0),
                                          devices=("", ""), seed=0)
        model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy",
                      metrics=["accuracy"], run_eagerly=run_eagerly)
        results.append(model.train_on_batch(images, labels, return_dict=True))
    assert results[0].keys() == results[1].keys() == {"loss", "accuracy"}, BROKEN
    for name in results[0]:
        assert results[0][name] == pytest.approx(results[1][name], rel=1e-5), \
            f"{BROKEN}: {name} {results[0][name]} (ours) != {results[1][name]} (Keras's)"


def test_an_unpinned_model_uses_the_strategy_in_scope():
    strategy = tf.distribute.MirroredStrategy(["/CPU:0"])
    with strategy.scope():
        model = tiny_model()
    assert model.distribute_strategy is strategy
    keras_internals.unpin_strategy(model)
    assert model.distribute_strategy is tf.distribute.get_strategy(), \
        f"{BROKEN}: the model stays pinned to the strategy it was built under"
    with strategy.scope():
        assert model.distribute_strategy is strategy, BROKEN


def test_update_step_variables_are_found_in_the_optimizers_list():
    """PaperSGD's learning-rate multipliers rest on `variable_index`: each variable
    `update_step` is handed maps back to its place in the optimizer's list."""
    variables = [keras.Variable(np.zeros(2, np.float32), name=name) for name in ("a", "b")]
    seen = []

    class Recording(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            seen.append(keras_internals.variable_index(self, variable))
            super().update_step(gradient, variable, learning_rate)

    try:
        Recording(0.1).apply_gradients([(np.ones(2, np.float32), v) for v in variables])
    except (AttributeError, KeyError) as error:
        pytest.fail(f"{BROKEN}: an optimizer no longer finds its variables' places ({error})")
    assert seen == [0, 1], f"{BROKEN}: update_step's variables map to {seen}, not [0, 1]"
