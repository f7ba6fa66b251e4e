"""The Keras behaviour keras_alexnet relies on that is not public API, all in one place.

Checked against Keras `KERAS_CHECKED`; `tests/keras_alexnet/test_keras_internals.py`
fails, naming the assumption and this module, when an upgrade breaks one of them.

- `track_loss`: a custom `train_step` feeds the mean loss `fit` reports through the
  metric Keras's own step feeds, which `compile` names "loss", and undoes the division
  by the replica count that `compute_loss` does for a distribution strategy.
- `unpin_strategy`: `fit` under `MultiWorkerMirroredStrategy` first reduces one input
  batch across the strategy to build the metrics, which fails on multi-worker values
  (keras-team/keras#20585).  Unpinned from the strategy it was built under (the private
  `_distribute_strategy`), the model finds the strategy in scope, as `fit` runs inside
  `scope()`, and builds when the step is traced instead.
- `variable_index`: an optimizer's `update_step` gets the backend's variable; its place
  in the optimizer's list (Keras's own `SGD.update_step` finds its momentum the same
  way) gives `PaperSGD` the variable's learning-rate multiplier.
- `step_results`: Keras averages a step's results across multi-worker replicas along
  axis 0, which scalars do not have; under that strategy the steps return 1-vectors,
  and the average of the (already synchronised) values is the value.
"""

from __future__ import annotations

import keras
import tensorflow as tf

KERAS_CHECKED = "3.15"
#: The name `compile` gives the metric that averages the loss (`Trainer._loss_tracker`).
LOSS_METRIC = "loss"


def loss_tracker(model: keras.Model) -> keras.metrics.Metric:
    """The compiled model's mean of the loss, as Keras's own `train_step` feeds it."""
    for metric in model.metrics:
        if metric.name == LOSS_METRIC:
            return metric
    raise RuntimeError(f"{model.name} has no {LOSS_METRIC!r} metric: compile it first (Keras "
                       f"{keras.__version__}; {__name__} was checked against Keras "
                       f"{KERAS_CHECKED})")


def track_loss(model: keras.Model, loss: tf.Tensor, batch_size: tf.Tensor) -> None:
    """Adds a step's `compute_loss` value to the loss `fit` reports."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    loss_tracker(model).update_state(loss * replicas, sample_weight=batch_size)


def unpin_strategy(model: keras.Model) -> None:
    """Lets `fit` run under `MultiWorkerMirroredStrategy` (see the module docstring)."""
    model._distribute_strategy = None


def step_results(results: dict) -> dict:
    """A train or test step's results, as 1-vectors under `MultiWorkerMirroredStrategy`."""
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return results
    return {name: tf.reshape(value, [1]) for name, value in results.items()}


def variable_index(optimizer: keras.optimizers.Optimizer, variable) -> int:
    """The place of the variable `update_step` was given in `optimizer`'s variable list."""
    return optimizer._get_variable_index(variable)
