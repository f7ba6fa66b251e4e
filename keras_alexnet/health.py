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

`UnitHealth` watches every epoch after: on a fixed batch of validation images, the
fraction of dead units in conv5, fc6 and fc7 (a unit no image activates: a ReLU that
no longer passes a gradient, [paper §3.1]) into the log and TensorBoard as
`dead_<layer>`, and it warns once when a layer passes `DEAD_UNITS`, and once when
the predictions collapse onto one class (over `COLLAPSED` of the images).
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np

from keras_alexnet.model import TOWERS
from tfrecords_tools.base.words import count

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


#: A layer with more dead units than this has lost most of its capacity: on real photos
#: the reduced network's fc7 at biases of 1 was 74% dead on a new dataset, at 0.1 2%
#: (`benchmarks/RESULTS.md`, "transfer.py").
DEAD_UNITS = 0.5
#: Predictions collapsed onto one class: more than this share of the images get it.
COLLAPSED = 0.9
#: The layers whose dead units `UnitHealth` reports: the last conv layer and the hidden
#: fc layers, the ones a blow-up kills first.
WATCHED = ("conv5", "fc6", "fc7")
#: Validation images `UnitHealth` measures on.
HEALTH_IMAGES = 256


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
    return accuracy <= chance + _two_errors(chance, images)


def _two_errors(chance: float, images: int) -> float:
    """Two binomial standard errors of an accuracy of `chance` on `images` images."""
    return 2 * math.sqrt(chance * (1 - chance) / images)


#: How `chance_verdict` ends when the network is no better than its guess.
NOT_LEARNED = "the network has not learned"


def chance_verdict(accuracy: float, images: int, chance: float, guess: str) -> str | None:
    """None when a top-1 accuracy on `images` validation images is clearly (two binomial
    standard errors) above `chance`, the accuracy of `guess` (e.g. "always naming bees,
    the most frequent class"); else what can be said, in words."""
    margin = _two_errors(chance, images)
    chance_error = 1 - chance
    if chance + margin >= 1:  # not even a perfect score would tell
        return (f"{count(images, 'validation image')} {'is' if images == 1 else 'are'} too "
                f"few to tell it from chance ({chance_error:.4f} error, {guess}); hold out "
                f"more")
    if accuracy > chance + margin:
        return None
    if accuracy <= chance:
        return f"no better than chance ({chance_error:.4f} error, {guess}): {NOT_LEARNED}"
    return (f"not clearly better than chance ({chance_error:.4f} error, {guess}; two "
            f"standard errors on {count(images, 'image')} are {margin:.4f})")


#: Caffe's initial biases in its bvlc_alexnet ("initializing non-zero biases to 0.1
#: instead of 1 (found necessary for training, as initialization to 1 gave flat loss)",
#: its readme).
CAFFE_BIAS = 0.1


def remedy(learning_rate: float, bias_advice: bool = True) -> str:
    """What to try for a run that does not learn: the biases the paper sets to 1 at
    Caffe's 0.1 (`bias_advice`: a network trained from scratch with larger ones), and a
    lower learning rate."""
    bias = (f"--bias-init {CAFFE_BIAS:g} (the biases the paper sets to 1) or "
            if bias_advice else "")
    return f"start again with {bias}a learning rate below {learning_rate:g}"


def remedy_dead_source() -> str:
    """What to try when a fine-tuning source's fc7 is mostly dead on the new data."""
    return ("fine-tune from a source trained with --bias-init 0.1 (Caffe's biases, which "
            "kept the reduced network's fc7 alive), or from one trained on photos more like "
            "these")


def dead_fraction(activations: np.ndarray) -> float:
    """The fraction of units (the last axis: a conv layer's maps, an fc layer's units)
    that are zero or below at every position of every image."""
    units = np.asarray(activations).reshape(-1, np.shape(activations)[-1])
    return float(1.0 - (units > 0).any(axis=0).mean())


class UnitHealth(keras.callbacks.Callback):
    """Each epoch, on `images` (a fixed batch, centre crops) and their `labels`: the
    dead fraction of conv5, fc6 and fc7 (`dead_conv5`, ... in the epoch's logs, so in
    the CSV log and TensorBoard); a warning, once each, when a layer passes
    `DEAD_UNITS` (a layer already past it when the run starts, a fine-tuning source's,
    is the start report's to warn of) and when, past the first `WINDOW` steps, over
    `COLLAPSED` of the images get one class (unless `monitor`, the run's
    `LearningMonitor`, has said it died)."""

    def __init__(self, images, labels, *, bias_advice: bool = True,
                 monitor: LearningMonitor | None = None, split: str = "validation"):
        super().__init__()
        self.images, self.bias_advice, self.monitor = images, bias_advice, monitor
        self.split = split  # where the images come from, for the warnings
        self.labels = keras.ops.convert_to_numpy(labels)
        self._probe_model = None
        self._warned: set[str] = set()

    def measure(self) -> tuple[dict[str, float], np.ndarray]:
        """The dead fraction of each watched layer the model has, and the images'
        predicted classes."""
        names = {layer.name for layer in self.model.layers}
        layers = [layer for layer in WATCHED if f"tower_a_{layer}" in names]
        if self._probe_model is None:
            self._probe_model = keras.Model(self.model.input, [
                *(self.model.get_layer(f"{tower}_{layer}").output for layer in layers
                  for tower in TOWERS), self.model.output])
        *outputs, probabilities = (keras.ops.convert_to_numpy(x) for x in
                                   self._probe_model(self.images, training=False))
        dead = {layer: dead_fraction(np.concatenate(outputs[2 * i:2 * i + 2], axis=-1))
                for i, layer in enumerate(layers)}
        return dead, np.argmax(probabilities, axis=1)

    def on_train_begin(self, logs=None):
        self._warned.update(layer for layer, dead in self.measure()[0].items()
                            if dead > DEAD_UNITS)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        dead, predicted = self.measure()
        if self.monitor is not None and self.monitor.warned:
            # It blew up or died in its first steps, and said so: dead units and one
            # class for all are the same news.
            self._warned.update([*dead, "collapse"])
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        for layer, fraction in dead.items():
            logs[f"dead_{layer}"] = fraction
            if fraction > DEAD_UNITS and layer not in self._warned:
                self._warned.add(layer)
                self._warn(epoch, f"{fraction:.0%} of {layer}'s units are dead (no one of "
                                  f"{len(self.images)} {self.split} images activates them)",
                           learning_rate)
        top = np.bincount(predicted).argmax()
        share = float((predicted == top).mean())
        steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        # In its first `WINDOW` steps a network often names one class for all; the
        # learning monitor judges those steps.
        if share > COLLAPSED and float((self.labels == top).mean()) <= COLLAPSED and \
                steps >= WINDOW and "collapse" not in self._warned:
            self._warned.add("collapse")
            self._warn(epoch, f"{share:.0%} of {len(predicted)} {self.split} images get one "
                              f"class (label {top}): the predictions have collapsed",
                       learning_rate)

    def _warn(self, epoch: int, what: str, learning_rate: float) -> None:
        warnings.warn(f"epoch {epoch + 1}: {what}; {remedy(learning_rate, self.bias_advice)}",
                      TrainingWarning, stacklevel=1)  # Keras calls the callback


class LearningMonitor(keras.callbacks.Callback):
    """Warns once, within the first `WINDOW` steps of a run, that the run has blown up or
    died (see the module's doc).

    `probe`: a batch of preprocessed training images (centre crops) the model's outputs
    and fc7 are measured on; `bias_advice`: the network started from fresh weights with
    biases above Caffe's 0.1 (so that initialisation is worth trying, `remedy`).
    """

    def __init__(self, num_classes: int, probe, *, bias_advice: bool = True):
        super().__init__()
        self.num_classes, self.probe, self.bias_advice = num_classes, probe, bias_advice
        self.done = self.warned = False
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
        self.done = self.warned = True
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        warnings.warn(f"step {step}: {what}; {remedy(learning_rate, self.bias_advice)}",
                      TrainingWarning, stacklevel=1)  # Keras calls the callback: no caller of ours
