"""The paper's optimiser: SGD with momentum and weight decay inside the momentum term."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_alexnet import keras_internals
from keras_alexnet.config import PAPER_LEARNING_RATE, TrainingOptions
from keras_alexnet.errors import AlexNetError


@keras.saving.register_keras_serializable(package="keras_alexnet")
class PaperSGD(keras.optimizers.SGD):
    """Stochastic gradient descent as trained in [paper §5].

        v <- momentum * v - decay * lr * w - lr * dL/dw
        w <- w + v

    with momentum 0.9, decay 0.0005 and lr 0.01 by default.  The decay is coupled:
    it enters the velocity like a gradient, unlike Keras's `SGD(weight_decay=)`, which
    shrinks the weights outside the momentum.  It applies to kernels only: biases
    and other variables (those whose name is not "kernel") get the plain momentum
    update, as in cuda-convnet's layer definitions for the paper, where decay is a
    per-weight-matrix setting and biases have none; decaying the biases that the paper
    initialises to 1 [paper §5] would pull them back towards dead ReLUs.
    """

    def __init__(self, learning_rate=PAPER_LEARNING_RATE,
                 momentum: float = TrainingOptions.momentum,
                 decay: float = TrainingOptions.weight_decay,
                 learning_rate_multipliers: dict[str, float] | None = None, **kwargs):
        if kwargs.get("weight_decay"):
            # Keras's weight_decay is decoupled (applied to the weights outside the
            # momentum): the rule this class exists to replace [paper §5].
            raise AlexNetError(
                f"PaperSGD(weight_decay={kwargs['weight_decay']}) is Keras's decoupled "
                f"decay, not the paper's; pass decay={kwargs['weight_decay']} instead (the "
                f"paper's 0.0005 is the default)")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        if decay < 0:
            raise AlexNetError(f"decay must be non-negative, got {decay}")
        self.decay = decay
        # Per-variable factors on the whole step, gradient and decay alike, as Caffe's
        # `lr_mult` scales its local rate (the new layer of a fine-tuning run,
        # `keras_alexnet.finetune`); keys are variable paths.
        self.learning_rate_multipliers = dict(learning_rate_multipliers or {})
        self._multipliers: list[float] = []

    def build(self, variables):
        super().build(variables)
        self._multipliers = [self.learning_rate_multipliers.get(v.path, 1.0) for v in variables]

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        # Keras only colocates slots under a distribution strategy; without one the
        # momentum of tower b's weights would sit on the default device and every
        # update would cross devices.  Keep each velocity beside its weight.
        if tf.distribute.has_strategy():
            return super().add_variable_from_reference(reference_variable, name, initializer)
        with tf.device(getattr(reference_variable, "value", reference_variable).device):
            return super().add_variable_from_reference(reference_variable, name, initializer)

    def update_step(self, gradient, variable, learning_rate):
        # The TensorFlow backend hands over the raw tf.Variable, named "kernel:0".
        if self.decay and variable.name.split(":")[0].endswith("kernel"):
            gradient = gradient + keras.ops.cast(self.decay, variable.dtype) * variable
        if self.learning_rate_multipliers:
            multiplier = self._multipliers[keras_internals.variable_index(self, variable)]
            if multiplier != 1.0:
                gradient = gradient * keras.ops.cast(multiplier, variable.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay,
                "learning_rate_multipliers": self.learning_rate_multipliers}
