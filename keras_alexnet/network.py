"""The AlexNet model class: a Keras functional model that trains each tower on its own
device and carries its input contract.

The contract rides in the config of the model's output layer, a `ContractCarrier` with
no weights (`Probabilities`, the softmax, for the whole network; an identity named
`features` for its convolutional part alone), so that every way Keras rebuilds a model
from configs keeps it: saving and `keras.saving.load_model`, and
`keras.models.clone_model`, which clones layer by layer.  Importing this module
registers these classes with Keras, and the layers and optimizer a checkpoint of one
holds: after it, `keras.saving.load_model` loads any of our checkpoints.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Registered with Keras on import: the model's layers and its optimizer.
import keras_alexnet.layers
import keras_alexnet.optimizer  # noqa: F401
from keras_alexnet import keras_internals
from keras_alexnet.contract import InputContract

OUTPUT = "probabilities"
#: The output layer of the convolutional part alone (`keras_alexnet.model.convolutional_base`).
FEATURES = "features"


@keras.saving.register_keras_serializable(package="keras_alexnet")
class ContractCarrier(keras.layers.Activation):
    """An activation (no weights) carrying the model's `input_contract` in its config;
    "linear", the identity, unless told."""

    def __init__(self, activation="linear", input_contract: InputContract | dict | None = None,
                 **kwargs):
        super().__init__(activation, **kwargs)
        if isinstance(input_contract, dict):  # from the config
            input_contract = InputContract.from_config(input_contract)
        self.input_contract = input_contract

    def get_config(self) -> dict:
        config = super().get_config()
        if self.input_contract is not None:
            config["input_contract"] = self.input_contract.to_config()
        return config


@keras.saving.register_keras_serializable(package="keras_alexnet")
class Probabilities(ContractCarrier):
    """The network's softmax output, carrying the model's `input_contract`."""

    def __init__(self, activation="softmax", **kwargs):
        super().__init__(activation, **kwargs)


_PROBABILITIES = {"module": Probabilities.__module__, "class_name": Probabilities.__name__,
                  "registered_name": keras.saving.get_registered_name(Probabilities)}


@keras.saving.register_keras_serializable(package="keras_alexnet")
class AlexNet(keras.Model):
    """A functional model whose training step keeps each tower's gradients on its device.

    Keras's default `train_step` differentiates with `tf.GradientTape`, whose gradient
    ops carry no device inside a `tf.function`, so the placer would put tower b's
    backward pass on the default device.  `tf.gradients` colocates every gradient op
    with its forward op (`colocate_gradients_with_ops`, always on in TF 2), which is what
    two-GPU model parallelism needs; `tests/keras_alexnet/test_placement.py` checks
    every op of a traced step.
    """

    @property
    def input_contract(self) -> InputContract | None:
        """What the network was trained on and how its input is made (None before
        training, or for a checkpoint saved before contracts were recorded)."""
        return self._carrier().input_contract

    @input_contract.setter
    def input_contract(self, contract: InputContract | None) -> None:
        self._carrier().input_contract = contract

    def _carrier(self) -> ContractCarrier:
        """The output layer: the softmax, or the identity after the convolutional part."""
        return next(layer for layer in self.layers if isinstance(layer, ContractCarrier))

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> AlexNet:
        # Models saved before the contract was in the output layer's config have a plain
        # Activation there (same name, no weights): rebuilt as a Probabilities, they can
        # take the contract `checkpoints.load_model` reads from the old place, and keep it.
        layers = [{**layer, **_PROBABILITIES}
                  if layer.get("name") == OUTPUT and layer.get("class_name") == "Activation"
                  else layer for layer in config["layers"]]
        return super().from_config({**config, "layers": layers}, custom_objects=custom_objects)

    def train_step(self, data):
        if tf.executing_eagerly():  # run_eagerly=True: no graph to colocate in
            return keras_internals.step_results(super().train_step(data))
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=True)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=True)
        keras_internals.track_loss(self, loss, batch_size=tf.shape(y_pred)[0])
        variables = self.trainable_variables
        # scale_loss: a LossScaleOptimizer's scaling (mixed precision), which its
        # apply_gradients undoes; the identity for any other optimizer.
        gradients = tf.gradients(self.optimizer.scale_loss(loss), variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return keras_internals.step_results(
            self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))

    def test_step(self, data):
        return keras_internals.step_results(super().test_step(data))
