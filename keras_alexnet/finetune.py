"""Fine-tuning: a new run that starts from another network's weights.

The paper's "1 CNN*" row is this move: pre-trained on ImageNet's Fall 2011 release,
then fine-tuned on ILSVRC-2012 [paper §6].  The new network keeps the source's
topology, geometry, mean and channel order, and takes the new data's classes; every
layer's weights are copied except `fc8` when the classes are not the source's (then it
is initialised as the paper's [paper §5], sized for the new classes).

How a new `fc8` is trained is the recipe (`TrainingOptions.recipe`):
- "lp-ft", the default: fitted first as a linear probe on the source's fc7 features of
  the training images (`keras_alexnet.probe`), then every layer trained at the
  fine-tuning rate 0.001 (LP-FT, Kumar et al., ICLR 2022; the two phases of Keras's
  transfer-learning guide).  On real photos, Caffe's recipe ended at chance where this
  one starts at the probe's accuracy (`benchmarks/RESULTS.md`, "transfer.py").
- "caffe": Caffe's fine-tuning example (`models/finetune_flickr_style`): the new fc8
  from noise, learning 10 times faster than the rest (its biases 20 times), rate 0.001.
`freeze` keeps a layer and every layer below it fixed in both towers (`conv5`: a new
classifier on the frozen convolutional features; `fc7`: the linear probe alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import keras

from keras_alexnet import checkpoints, health, pretrained, probe
from keras_alexnet.config import AlexNetConfig
from keras_alexnet.contract import class_key
from keras_alexnet.errors import CheckpointError
from keras_alexnet.model import (
    TOWERS,
    build_network,
    check_topology,
    classifier,
    config_of,
    layers_of,
    set_classifier,
)
from tfrecords_tools.base import storage
from tfrecords_tools.base.words import count

NEW_LAYER = "fc8"
#: Caffe's `finetune_flickr_style/train_val.prototxt`: the new layer's `lr_mult` 10 for
#: its weights and 20 for its biases.
NEW_LAYER_LEARNING_RATE_MULTIPLIERS = {"kernel": 10.0, "bias": 20.0}


@dataclasses.dataclass(frozen=True)
class Source:
    """The checkpoint a fine-tuning run starts from."""

    path: storage.PathOrUrl
    sha256: str
    model: keras.Model

    def to_json(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256}


def read_source(path_or_run: str | Path) -> Source:
    """A run directory (its latest checkpoint), a `.keras` checkpoint or weights known by
    name (`keras_alexnet.pretrained`, e.g. "bvlc_alexnet"), loaded."""
    path = checkpoints.resolve(pretrained.resolve(path_or_run))
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    model = checkpoints.load_model(path, compile=False)
    if getattr(model, "input_contract", None) is None:
        raise CheckpointError(f"{path} has no input contract (classes, mean); resume its "
                              f"training once to record it, then fine-tune from it")
    return Source(path, digest.hexdigest(), model)


def _keys(classes: tuple[tuple[str, str], ...]) -> list[str]:
    return [class_key(*pair) for pair in classes]


def new_head(source: Source, classes: tuple[tuple[str, str], ...]) -> bool:
    """Whether `classes` need a new fc8: they are not the source's classes (matched by
    WNID, else by name; in any order, `initialise_from` reorders fc8's units)."""
    return sorted(_keys(classes)) != sorted(_keys(source.model.input_contract.classes))


def initialise_from(source: Source, classes: tuple[tuple[str, str], ...], *,
                    devices=None, seed: int | None = None,
                    config: AlexNetConfig | None = None) -> keras.Model:
    """A new model with `source`'s weights for `classes` (fc8 new unless they are the
    source's classes, `new_head`; then its units in the order of `classes`), carrying
    the source's contract with these classes.

    `config`, when given, must describe the source's network (its class count aside).
    """
    layers = layers_of(source.model)
    if not {"fc6", "fc7", NEW_LAYER} <= set(layers):
        raise CheckpointError(f"{source.path}: the convolutional part of a network (its "
                              f"layers: {', '.join(layers)}; no fc6, fc7, fc8), which "
                              f"cannot classify; fine-tune from a whole network's "
                              f"checkpoint")
    if config is not None:
        check_topology(source.model, config, source.path, "fine-tune without a config, or "
                       "with the source's", classes=False)
    wanted = dataclasses.replace(config_of(source.model), num_classes=len(classes))
    model = build_network(wanted, devices=devices, seed=seed)
    for name in layers:
        if name == NEW_LAYER:
            continue
        for tower in TOWERS:
            layer = f"{tower}_{name}"
            model.get_layer(layer).set_weights(source.model.get_layer(layer).get_weights())
    if not new_head(source, classes):
        kernel, bias = classifier(source.model)
        order = [_keys(source.model.input_contract.classes).index(key)
                 for key in _keys(classes)]
        set_classifier(model, kernel[:, order], bias[order])
    model.input_contract = dataclasses.replace(source.model.input_contract,
                                               classes=tuple(classes))
    return model


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """A new fine-tuning run: its source, whether fc8 is new, and what became of it."""

    source: Source
    new_head: bool
    head: str  # for the start report and run.json

    def to_json(self) -> dict:
        return {**self.source.to_json(), "fc8": self.head}


def start_head(model: keras.Model, source: Source, classes: tuple[tuple[str, str], ...],
               images, *, recipe: str, freeze: str | None = None) -> FineTuning:
    """Readies `model` (from `initialise_from`) for its first step: a new fc8 fitted as a
    linear probe on fc7 of `images` (centre crops of the training images and their
    labels) for the recipe "lp-ft"; and warns (a `TrainingWarning`) when the source's fc7
    is mostly dead on them."""
    new = new_head(source, classes)
    if new and recipe == "lp-ft":
        fitted = probe.fit_head(model, images, len(classes))
        dead, seen = fitted.dead_fc7, fitted.images
        head = (f"lp-ft: the new fc8 fitted as a linear probe on fc7 of "
                f"{count(seen, 'training image')} (top-1 {fitted.train_top1:.3f} on them"
                f"{'' if fitted.converged else ', L-BFGS not converged'}), then "
                f"{'the layers above ' + freeze if freeze else 'every layer'} trained")
    else:
        features, _ = probe.fc7_activations(model, images)
        dead, seen = health.dead_fraction(features), len(features)
        factors = NEW_LAYER_LEARNING_RATE_MULTIPLIERS
        head = (f"caffe: a new fc8 from noise, learning {factors['kernel']:g}x faster, its "
                f"biases {factors['bias']:g}x" if new else
                "the source's fc8 kept (the data has the source's classes)")
    if dead > health.DEAD_UNITS:
        warnings.warn(
            f"{dead:.0%} of the source's fc7 units are dead on these photos (no one of "
            f"{count(seen, 'training image')} activates them): a new classifier can use "
            f"only the rest; {health.remedy_dead_source()}",
            health.TrainingWarning, stacklevel=5)  # fit's caller
    return FineTuning(source, new, head)


def freeze(model: keras.Model, up_to: str) -> list[str]:
    """Makes `up_to` and every layer below it untrainable in both towers; their names."""
    layers = layers_of(model)
    if up_to not in layers[:-1]:
        raise CheckpointError(f"cannot freeze {up_to!r}: the layers are "
                              f"{', '.join(layers[:-1])} (fc8 is the classifier)")
    frozen = [f"{tower}_{name}" for name in layers[:layers.index(up_to) + 1]
              for tower in TOWERS]
    for name in frozen:
        model.get_layer(name).trainable = False
    return frozen


def new_layer_multipliers(model: keras.Model) -> dict[str, float]:
    """`PaperSGD`'s learning-rate multipliers for the new fc8's variables, by path."""
    return {variable.path: NEW_LAYER_LEARNING_RATE_MULTIPLIERS[variable.path.split("/")[-1]]
            for tower in TOWERS for variable in model.get_layer(f"{tower}_{NEW_LAYER}")
            .trainable_variables}
