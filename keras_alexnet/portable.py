"""Exports for runtimes other than TensorFlow: ONNX, OpenVINO IR and LiteRT (TFLite).

Each artifact is the network on what a user has: float32 RGB crops of the input
contract's size (`InputContract.image_size`), pixel values on the 0-255 scale, NHWC,
any batch size; the training mean and the channel order are inside [paper §2].  Its
input is named `images`; its one output is the softmax probabilities, in the contract's
class order.  `input_contract.json` beside it is the contract (`InputContract.to_config`:
the classes, the crop and rescale sizes, the mean), so a user can name the outputs and
cut the crops.

The layout is the SavedModel's, `<export_base>/<model_name>/<version>/`, holding
`model.onnx`, `model.xml` and `model.bin`, or `model.tflite`: OpenVINO Model Server and
Triton read ONNX and OpenVINO models from version directories with these names.
Keras's own exporters write them (`keras.Model.export(format=...)`: tf2onnx, OpenVINO's
`convert_model`, TensorFlow's LiteRT converter).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from keras_alexnet import versions
from keras_alexnet.contract import METADATA_KEY, InputContract, preprocess_input
from keras_alexnet.ensemble import ModelSource, load_members
from keras_alexnet.errors import AlexNetError, MissingPackageError
from serving import DEFAULT_MODEL_NAME
from tfrecords_tools.base import storage

CONTRACT_FILE = f"{METADATA_KEY}.json"
INPUT_NAME = "images"


@dataclasses.dataclass(frozen=True)
class PortableFormat:
    """file: the artifact's name in the version directory; packages: what writing it
    imports; extra: the keras-alexnet extra that installs them."""

    file: str
    packages: tuple[str, ...]
    extra: str


#: Keras's export format names.  LiteRT's converter is part of TensorFlow; running the
#: file needs the interpreter of the `litert` extra.
FORMATS = {"onnx": PortableFormat("model.onnx", ("tf2onnx", "onnx"), "onnx"),
           "openvino": PortableFormat("model.xml", ("openvino",), "openvino"),
           "litert": PortableFormat("model.tflite", (), "litert")}


class ContractInput(keras.layers.Layer):
    """0-255 RGB crops -> the network's input: minus the contract's mean, in its channel
    order (`contract.preprocess_input`)."""

    def __init__(self, input_contract: InputContract, **kwargs):
        super().__init__(**kwargs)
        self.input_contract = input_contract

    def call(self, images):
        return preprocess_input(images, self.input_contract)


def pixels_model(model: keras.Model, contract: InputContract) -> keras.Model:
    """The network on 0-255 RGB crops: `images` [N, S, S, 3] -> probabilities."""
    size = contract.image_size
    images = keras.Input((size, size, 3), name=INPUT_NAME)
    return keras.Model(images, model(ContractInput(contract, name="contract")(images)),
                       name=f"{model.name}_on_pixels")


def _require(portable: PortableFormat, format: str) -> None:
    for package in portable.packages:
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise MissingPackageError(
                f"exporting to {format} needs the {package} package: pip install -e "
                f"\".[{portable.extra}]\"") from error


def export_portable(model_or_checkpoint: ModelSource | Sequence[ModelSource],
                    export_base: str | os.PathLike, model_name: str = DEFAULT_MODEL_NAME,
                    version: int | None = None, *, format: str,
                    data_dir: str | os.PathLike | None = None) -> storage.PathOrUrl:
    """Writes the model for ONNX Runtime, OpenVINO or LiteRT; returns the artifact's path.

    Args:
        model_or_checkpoint: a Keras model with an input contract, a `.keras` checkpoint
            or a training run's model directory (its latest checkpoint).
        export_base: the artifact goes to `<export_base>/<model_name>/<version>/`; a
            local path or a `tf.io.gfile` URL.
        model_name: the model's directory name.
        version: the integer version directory; default one more than the latest.
        format: "onnx", "openvino" or "litert" (`FORMATS`).
        data_dir: only for a checkpoint saved before input contracts were recorded:
            the shard directory it was trained on (classes, per-channel mean).
    """
    if format not in FORMATS:
        raise AlexNetError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    portable = FORMATS[format]
    _require(portable, format)
    members = load_members(model_or_checkpoint, data_dir)
    if len(members) > 1:
        raise AlexNetError(f"the {format} export takes one model; export an ensemble as a "
                           f"SavedModel")
    member = members[0]
    version_dir = versions.new_version_dir(export_base, model_name, version)
    size = member.contract.image_size
    signature = [tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)]

    def write(directory: Path) -> None:
        pixels_model(member.model, member.contract).export(
            str(directory / portable.file), format=format, input_signature=signature,
            verbose=False)
        (directory / CONTRACT_FILE).write_text(json.dumps(member.contract.to_config()))

    versions.write_version(version_dir, write, last=(portable.file,))
    return version_dir / portable.file
