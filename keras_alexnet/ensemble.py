"""Ensembles: several trained networks whose softmax outputs are averaged [paper §6].

"Averaging the predictions of five similar CNNs gives an error rate of 16.4%" (one CNN:
18.2%) [paper §6, Table 2].  `evaluate`, `export` and `predict` take several models or
checkpoints where they take one; this module loads them as `Member`s.

Each member keeps its own input contract (image size, rescale size, mean, channel
order): it sees every image preprocessed as it was trained.  Classes are matched by
WNID (by name where a contract has no WNIDs), so members whose shard directories list
the classes in different orders still average class by class; the ensemble's classes
are in the first member's order.  A member that lacks a class another has is refused:
its probabilities would not sum to one over the ensemble's classes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import keras
import numpy as np

from keras_alexnet import checkpoints
from keras_alexnet.contract import InputContract, class_key, contract_of
from keras_alexnet.errors import AlexNetError
from tfrecords_tools.base import storage
from tfrecords_tools.dataset import DatasetInfo

ModelSource = keras.Model | str | os.PathLike


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One network of an ensemble.

    source: what it is called in messages and tables (the path given, or the model's
        name and place); checkpoint: the `.keras` file it was loaded from (a model
        directory's latest), None for a model object.
    order: the member's output columns in the ensemble's class order: column i of the
        ensemble is column `order[i]` of this member.
    """

    source: str
    checkpoint: storage.PathOrUrl | None
    model: keras.Model
    contract: InputContract
    order: np.ndarray


def _load(source: ModelSource, place: int, count: int
          ) -> tuple[str, storage.PathOrUrl | None, keras.Model]:
    if isinstance(source, keras.Model):
        name = f"model {source.name!r}"
        return (f"{name} (member {place + 1})" if count > 1 else name), None, source
    model = checkpoints.load_model(source, compile=False)
    return str(source), checkpoints.resolve(source), model


def _orders(members: Sequence[tuple[str, InputContract]]) -> list[np.ndarray]:
    """Each member's columns in the first member's class order, matched by WNID."""
    first_source, first = members[0]
    keys = [class_key(*pair) for pair in first.classes]
    known = set(keys)
    orders = []
    for source, contract in members:
        columns = {class_key(*pair): column for column, pair in enumerate(contract.classes)}
        missing = [(source, first_source, pair) for pair in first.classes
                   if class_key(*pair) not in columns]
        extra = [(first_source, source, pair) for pair in contract.classes
                 if class_key(*pair) not in known]
        if missing or extra:
            lacking, having, (wnid, name) = (missing or extra)[0]
            label = f"{wnid} ({name})" if wnid else repr(name)
            raise AlexNetError(f"{lacking} has no class {label}, which {having} has: an "
                               f"ensemble's members must share their classes (matched by "
                               f"WNID)")
        orders.append(np.array([columns[key] for key in keys]))
    return orders


def load_members(model_or_checkpoints: ModelSource | Sequence[ModelSource],
                 data_dir: str | os.PathLike | DatasetInfo | None = None) -> list[Member]:
    """Models with input contracts, `.keras` checkpoints or training runs' model
    directories (their latest checkpoint) -> `Member`s with their classes matched.

    `data_dir` is only for checkpoints saved before input contracts were recorded: the
    shard directory they were trained on (classes, per-channel mean).
    """
    sources = (list(model_or_checkpoints) if isinstance(model_or_checkpoints, (list, tuple))
               else [model_or_checkpoints])
    if not sources:
        raise AlexNetError("no model given: an ensemble needs at least one model or run")
    loaded = []
    for place, source in enumerate(sources):
        name, checkpoint, model = _load(source, place, len(sources))
        contract = contract_of(model, data_dir, source=source)
        if len(contract.classes) != model.output_shape[-1]:
            raise AlexNetError(f"{name}: its input contract lists {len(contract.classes)} "
                               f"classes but the model outputs {model.output_shape[-1]}")
        if contract.image_size != model.input_shape[1]:
            raise AlexNetError(f"{name}: its input contract is for {contract.image_size}x"
                               f"{contract.image_size} inputs but the model takes "
                               f"{model.input_shape[1]}")
        loaded.append((name, checkpoint, model, contract))
    orders = _orders([(name, contract) for name, _, _, contract in loaded])
    return [Member(name, checkpoint, model, contract, order)
            for (name, checkpoint, model, contract), order in zip(loaded, orders, strict=True)]
