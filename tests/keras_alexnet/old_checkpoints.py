"""Checkpoints as earlier versions wrote them, for the tests that they keep loading."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import keras
import numpy as np


def save_without_contract(model: keras.Model, path: Path) -> Path:
    """`model` saved as checkpoints were before contracts were recorded."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.input_contract = None
    copy.save(path)
    return path


def save_in_the_old_format(model: keras.Model, path: Path) -> Path:
    """`model` saved as checkpoints were when the contract was a `keras_alexnet.json` key
    and the mean image a member of its own, with a plain softmax Activation as output."""
    contract = model.input_contract
    save_without_contract(model, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    (output,) = [layer for layer in config["config"]["layers"]
                 if layer["name"] == "probabilities"]
    output.update(module="keras.layers", class_name="Activation", registered_name=None)
    members["config.json"] = json.dumps(config).encode()
    fields = {"classes": [list(pair) for pair in contract.classes],
              "image_size": contract.image_size, "resize_size": contract.resize_size,
              "mean": contract.mean, "mean_rgb": list(contract.mean_rgb),
              "channel_order": contract.channel_order, "pixel_scale": contract.pixel_scale}
    members["keras_alexnet.json"] = json.dumps({"epoch": 1, "input_contract": fields}).encode()
    if contract.mean_image is not None:
        buffer = io.BytesIO()
        np.save(buffer, contract.mean_image)
        members["input_mean_image.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path
