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


def test_learning_rate_multipliers_scale_the_whole_step_as_caffes_lr_mult():
    """Caffe: v <- m v - lr * mult * (grad + decay w); a multiplier 1 leaves a variable
    as without multipliers.  Three steps against numpy, a kernel at 10x and a bias at
    20x beside a kernel at 1x."""
    shapes = {"layer/kernel": (3, 2), "layer/bias": (2,), "other/kernel": (2, 2)}
    rng = np.random.default_rng(3)
    variables = {path: keras.Variable(rng.normal(size=shape).astype(np.float32),
                                      name=path.replace("/", "_"))  # unique paths
                 for path, shape in shapes.items()}
    multipliers = {"layer/kernel": 10.0, "layer/bias": 20.0}
    optimizer = PaperSGD(learning_rate=0.01, momentum=0.9, decay=0.5,
                         learning_rate_multipliers={
                             v.path: multipliers.get(path, 1.0)
                             for path, v in variables.items() if path in multipliers})
    weights = {path: np.asarray(v, np.float64) for path, v in variables.items()}
    velocity = {path: np.zeros_like(w) for path, w in weights.items()}
    for step in range(3):
        gradients = {path: rng.normal(size=shapes[path]).astype(np.float32) for path in shapes}
        optimizer.apply_gradients([(gradients[p], variables[p]) for p in shapes])
        for path in shapes:
            decay = 0.5 if path.endswith("kernel") else 0.0
            rate = 0.01 * multipliers.get(path, 1.0)
            velocity[path] = 0.9 * velocity[path] - rate * (gradients[path] + decay * weights[path])
            weights[path] = weights[path] + velocity[path]
            np.testing.assert_allclose(np.asarray(variables[path]), weights[path], rtol=1e-5,
                                       atol=1e-6, err_msg=f"{path}, step {step + 1}")
    restored = PaperSGD.from_config(optimizer.get_config())
    assert restored.learning_rate_multipliers == optimizer.learning_rate_multipliers
