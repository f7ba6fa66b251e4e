"""PaperSGD against a numpy implementation of the update rule of [paper §5]."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_alexnet import PaperSGD, build_model, reduced_config

# A decay far above the paper's 0.0005, so that its term is well above float32 noise.
LR, MOMENTUM, DECAY = 0.05, 0.9, 0.5


def test_three_training_steps_follow_the_paper_rule():
    """v <- 0.9 v - 0.0005 lr w - lr dL/dw; w <- w + v, through the model's own fit step."""
    # No dropout, so a step's gradient can be recomputed outside the training step.
    model = build_model(reduced_config(dropout=0.0, width=0.0625, num_classes=4))
    model.compile(PaperSGD(learning_rate=LR, momentum=MOMENTUM, decay=DECAY),
                  keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (6, 64, 64, 3)).astype("float32")
    labels = rng.integers(0, 4, 6)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    names = [v.name for v in model.trainable_variables]
    weights = [np.asarray(v, np.float64) for v in model.trainable_variables]
    start = [w.copy() for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        for i, (name, grad) in enumerate(zip(names, gradients, strict=True)):
            decay = DECAY if name == "kernel" else 0.0  # biases: plain momentum
            velocity[i] = MOMENTUM * velocity[i] - decay * LR * weights[i] - LR * np.asarray(grad)
            weights[i] = weights[i] + velocity[i]
        model.train_on_batch(images, labels)
        for expected, variable in zip(weights, model.trainable_variables, strict=True):
            np.testing.assert_allclose(np.asarray(variable), expected, rtol=2e-4, atol=2e-6,
                                       err_msg=variable.path)
    moved = [np.abs(w - w0).max() for name, w, w0 in zip(names, weights, start, strict=True)
             if name == "kernel"]
    assert len(moved) == 16 and min(moved) > 1e-5  # every kernel of both towers took part


def test_decay_is_inside_the_momentum_not_decoupled():
    """With a zero gradient the kernel shrinks through the velocity; the bias stays."""
    kernel = keras.Variable(np.full((2, 2), 10.0, np.float32), name="kernel")
    bias = keras.Variable(np.full((2,), 10.0, np.float32), name="bias")
    optimizer = PaperSGD(learning_rate=0.1, momentum=0.9, decay=0.5)
    zeros = [np.zeros((2, 2), np.float32), np.zeros((2,), np.float32)]
    optimizer.apply_gradients(zip(zeros, [kernel, bias], strict=True))
    optimizer.apply_gradients(zip(zeros, [kernel, bias], strict=True))
    # step 1: v = -0.5*0.1*10 = -0.5, w = 9.5; step 2: v = 0.9*-0.5 - 0.05*9.5 = -0.925
    np.testing.assert_allclose(np.asarray(kernel), 9.5 - 0.925, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bias), 10.0)


def test_optimizer_round_trips_config():
    optimizer = PaperSGD.from_config(PaperSGD(decay=0.001).get_config())
    assert (optimizer.decay, float(optimizer.momentum)) == (0.001, 0.9)
    with pytest.raises(ValueError, match="decay must be non-negative"):
        PaperSGD(decay=-1.0)


def test_keras_decoupled_weight_decay_is_refused_with_the_paper_argument_named():
    with pytest.raises(ValueError, match=r"weight_decay=0.0005\) is Keras's decoupled decay.*"
                                         r"pass decay=0.0005 instead"):
        PaperSGD(weight_decay=0.0005)
    assert PaperSGD(weight_decay=None).decay == 0.0005  # as get_config writes it
