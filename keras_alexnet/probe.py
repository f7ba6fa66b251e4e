"""The linear probe: a new classifier fitted to a network's fixed fc7 features.

A fine-tuning run that starts its new `fc8` from noise (the paper's N(0, 0.01)
[paper §5], or Caffe's recipe of the same at 10x the learning rate) spends its few
steps on a head that is wrong for every image, and the error it sends back disturbs
the copied layers below: on a hundred real photos it ended at chance, below a
logistic regression on the source's own fc7 features.  LP-FT (Kumar et al., "Fine-
Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR
2022) first fits the head as that logistic regression (a linear probe), then fine-tunes
every layer from there; Keras's transfer-learning guide does the same in two phases.

`fit_head` is the first phase: fc7's activations of the training images (centre crops,
inference mode: no dropout), a multinomial logistic regression fitted to them to
convergence (`softmax_regression`, L-BFGS on the convex loss, scikit-learn's default
L2 strength), and its weights written into both towers' fc8.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import scipy.optimize
import scipy.special
import tensorflow as tf

from keras_alexnet.errors import AlexNetError
from keras_alexnet.health import dead_fraction
from keras_alexnet.model import fc7_features, set_classifier

#: At most this many training images feed the probe: fc7 of the paper's network is 4,096
#: values, so 20,000 images are 330 MB of float32 and seconds of L-BFGS; with more images
#: a probe adds little that the fine-tuning phase does not give.
MAX_IMAGES = 20_000
#: L-BFGS iterations at most; the probes of a few hundred images converge in under 200.
MAX_ITERATIONS = 1_000


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What the probe saw: its images, its top-1 accuracy on them, and the fraction of
    fc7's units that no image activated (`dead_fc7`)."""

    images: int
    train_top1: float
    dead_fc7: float
    converged: bool


def fc7_activations(model: keras.Model, batches: tf.data.Dataset,
                    max_images: int = MAX_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """fc7's activations (both towers, after ReLU, inference mode) and the labels of the
    (images, labels) `batches`, the first `max_images` of them."""
    network = fc7_features(model)
    features, labels, count = [], [], 0
    for images, batch_labels in batches:
        features.append(network(images, training=False).numpy())
        labels.append(keras.ops.convert_to_numpy(batch_labels))
        count += len(labels[-1])
        if count >= max_images:
            break
    if not features:
        raise AlexNetError("the probe got no training images")
    return (np.concatenate(features)[:max_images].astype(np.float64),
            np.concatenate(labels)[:max_images].astype(np.int64))


def softmax_regression(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                       l2: float | None = None, max_iterations: int = MAX_ITERATIONS
                       ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The multinomial logistic regression of `labels` (0..num_classes-1) on `features`
    (N, D): kernel (D, num_classes), bias (num_classes,), and whether L-BFGS converged.

    Minimises the mean cross-entropy plus `l2` / 2 times the kernel's squared norm (the
    bias is not penalised).  `l2` defaults to 1 / N, scikit-learn's `LogisticRegression`
    default (C=1 on the summed loss).
    """
    features = np.asarray(features, np.float64)
    count, dims = features.shape
    l2 = 1.0 / count if l2 is None else l2
    onehot = np.eye(num_classes)[labels]

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = theta[:-num_classes].reshape(dims, num_classes), theta[-num_classes:]
        log_p = scipy.special.log_softmax(features @ kernel + bias, axis=1)
        loss = -(onehot * log_p).sum() / count + 0.5 * l2 * (kernel ** 2).sum()
        error = (np.exp(log_p) - onehot) / count
        gradient = np.concatenate([(features.T @ error + l2 * kernel).ravel(),
                                   error.sum(axis=0)])
        return loss, gradient

    result = scipy.optimize.minimize(
        loss_and_gradient, np.zeros(dims * num_classes + num_classes), jac=True,
        method="L-BFGS-B", options={"maxiter": max_iterations})
    theta = result.x
    return (theta[:-num_classes].reshape(dims, num_classes), theta[-num_classes:],
            bool(result.success))


def fit_head(model: keras.Model, batches: tf.data.Dataset, num_classes: int,
             max_images: int = MAX_IMAGES) -> ProbeResult:
    """Fits `model`'s fc8 as a linear probe on its fc7 features of `batches` (centre
    crops of training images and their labels), in place."""
    features, labels = fc7_activations(model, batches, max_images)
    kernel, bias, converged = softmax_regression(features, labels, num_classes)
    set_classifier(model, kernel, bias)
    predicted = np.argmax(features @ kernel + bias, axis=1)
    return ProbeResult(images=len(labels), train_top1=float((predicted == labels).mean()),
                       dead_fc7=dead_fraction(features), converged=converged)

