"""Signs, in a run's first steps, that it is not learning: `LearningMonitor`.

The paper's recipe (weights N(0, 0.01), biases of 1 in conv2, conv4, conv5, fc6, fc7,
learning rate 0.01 [paper §5]) can blow the loss up within a few steps and leave the
ReLUs dead: from then on every image gets the same output, the loss sits near
ln(classes) and the run goes on for days at chance.  The monitor watches the first
`WINDOW` steps and warns once (`TrainingWarning`, a Python warning) naming the step,
the loss and ln(classes), when

- the loss (the epoch's running mean, as the progress bar shows it) rises above
  `BLOWN_UP` times the larger of ln(classes) and its first step's value, or
- every image gets the same output: the softmax of `PROBE_IMAGES` fixed training
  images (centre crops, inference mode) differ by less than `DEAD_SPREAD` at
  `DEAD_PROBES` probes in a row, one every `PROBE_EVERY` steps.  That is the "stays at
  ln(classes)" case: the loss of a network that ignores its input wanders around
  ln(classes) with each batch's class mix, so the outputs tell it, not the loss.

A probe is one forward pass of a few images, `WINDOW / PROBE_EVERY` times per run.
`at_chance` tells the end of a run that its best accuracy is no better than a guess.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np

#: Steps watched from the start of a run: the runs this guards against blew up within
#: 5 steps and were dead by the 10th.
WINDOW = 50
#: Measured on the training tests' data (`tests/keras_alexnet/training_helpers.py`,
#: reduced network, batch 16): a run that learns never had a running mean loss above
#: 1.02 times its first step's in 40 steps; at learning rate 0.05 it reached 3.4 times
#: it at step 2 and died; a run of the paper network on 10 classes of photos that died
#: logged 2.96, 9.92, 16.9 in its first three steps.  ln(classes) is the floor for an
#: initial loss that happens to be low.
BLOWN_UP = 3.0
PROBE_EVERY = 5
PROBE_IMAGES = 16
#: The spread (`output_spread`) of a dead network is 0 to float precision (1e-6 for the
#: reduced network at the paper's N(0, 0.01), which sits at ln(classes)); that of a run
#: that learns was 1e-2 at its lowest in its first 40 steps.
DEAD_SPREAD = 1e-4
#: A blow-up can leave the outputs equal for a few steps and then recover.
DEAD_PROBES = 2
TOWERS = ("tower_a", "tower_b")  # [paper §3.2]


class TrainingWarning(UserWarning):
    """A training run shows signs of not learning; the message says which, and what to
    try."""


def output_spread(probabilities: np.ndarray) -> float:
    """How much a batch's outputs differ: the mean, over its images, of the total
    variation distance between an image's class probabilities and the batch's mean
    ones; 0 when every image gets the same output."""
    p = np.asarray(probabilities, np.float64)
    return float(0.5 * np.abs(p - p.mean(axis=0)).sum(axis=1).mean())


def at_chance(accuracy: float, num_classes: int, images: int) -> bool:
    """Whether a top-1 accuracy on `images` images is no better than naming one class
    for all: within two binomial standard errors above 1 / num_classes."""
    chance = 1 / num_classes
    return accuracy <= chance + 2 * math.sqrt(chance * (1 - chance) / images)


def remedy(learning_rate: float, new_model: bool = True) -> str:
    """What to try for a run that does not learn: the biases the paper sets to 1 at 0.1,
    Caffe's choice in its `bvlc_alexnet` model (only for a network trained from scratch),
    and a lower learning rate."""
    bias = "--bias-init 0.1 (the biases the paper sets to 1) or " if new_model else ""
    return f"start again with {bias}a learning rate below {learning_rate:g}"


class LearningMonitor(keras.callbacks.Callback):
    """Warns once, within the first `WINDOW` steps of a run, that the run has blown up or
    died (see the module's doc).

    `probe`: a batch of preprocessed training images (centre crops) the model's outputs
    and fc7 are measured on; `new_model`: the network started from fresh weights (so a
    different bias initialisation is worth trying).
    """

    def __init__(self, num_classes: int, probe, *, new_model: bool = True):
        super().__init__()
        self.num_classes, self.probe, self.new_model = num_classes, probe, new_model
        self.done = False
        self._first_loss = self._probe_model = None
        self._fc7: list[str] = []  # the fc7 layers the probe reads, where the model has them
        self._dead_since: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        if self.done:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step > WINDOW:
            self.done = True
            return
        loss = float((logs or {}).get("loss", math.nan))
        if self._first_loss is None:
            self._first_loss = loss
        reference = max(math.log(self.num_classes), self._first_loss)
        if loss > BLOWN_UP * reference:
            self._warn(step, f"the loss rose to {loss:.4g}, over {BLOWN_UP:g} times both "
                             f"{self._ln()} and the first step's {self._first_loss:.4g}: "
                             f"the run has blown up, which often leaves its units dead")
        elif step % PROBE_EVERY == 0:
            self._check_outputs(step, loss)

    def _ln(self) -> str:
        return f"ln({self.num_classes}) = {math.log(self.num_classes):.4f} (a uniform guess)"

    def _check_outputs(self, step: int, loss: float) -> None:
        if self._probe_model is None:
            names = {layer.name for layer in self.model.layers}
            self._fc7 = [f"{tower}_fc7" for tower in TOWERS if f"{tower}_fc7" in names]
            self._probe_model = keras.Model(self.model.input, [
                *(self.model.get_layer(name).output for name in self._fc7), self.model.output])
        *fc7, probabilities = (keras.ops.convert_to_numpy(x) for x in
                               self._probe_model(self.probe, training=False))
        spread = output_spread(probabilities)
        if spread >= DEAD_SPREAD:
            self._dead_since = None
            return
        self._dead_since = self._dead_since or step
        if step - self._dead_since >= (DEAD_PROBES - 1) * PROBE_EVERY:
            active = "".join(f"; {name} units active: {int((units > 0).any(axis=0).sum())} "
                             f"of {units.shape[-1]}"
                             for name, units in zip(self._fc7, fc7, strict=True))
            self._warn(step, f"every image gets the same output since step "
                             f"{self._dead_since} (spread {spread:.1e} over "
                             f"{len(probabilities)} training images{active}): the network "
                             f"is not learning; the loss is {loss:.4g}, {self._ln()}")

    def _warn(self, step: int, what: str) -> None:
        self.done = True
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        warnings.warn(f"step {step}: {what}; {remedy(learning_rate, self.new_model)}",
                      TrainingWarning, stacklevel=1)  # Keras calls the callback: no caller of ours
