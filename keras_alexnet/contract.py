"""The input contract: what a network was trained on, and how its input is made from an image.

A trained AlexNet is only right on inputs made the way its training inputs were: RGB
pixels on the 0-255 scale, rescaled so the shorter side is `resize_size` and cropped to
`image_size`, minus the training mean, per channel or per pixel [paper §2], and its
outputs only mean something with its own class list.  The model carries this
`InputContract` in its own Keras config (`keras_alexnet.network.AlexNet.input_contract`),
so every checkpoint and step backup holds it, `keras.saving.load_model` and
`keras.models.clone_model` keep it, and evaluation, export, prediction and the pictures
read it from there: none of them re-derives the preprocessing or the names from a data
directory.

`preprocess_input` and `decode_predictions` follow the Keras applications' conventions.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet.config import MEAN_MODES
from keras_alexnet.errors import AlexNetError
from keras_alexnet.preprocessing import resize_size_for
from tfrecords_tools.base import storage
from tfrecords_tools.dataset import DatasetInfo
from tfrecords_tools.stats import ImageStats

CHANNEL_ORDERS = ("RGB", "BGR")
#: Where checkpoints written before the contract was part of the model's Keras config
#: kept it: a key of their `keras_alexnet.json`, and the mean image as a member.
METADATA_KEY = "input_contract"
MEAN_IMAGE_MEMBER = "input_mean_image.npy"


def class_key(wnid: str, name: str) -> str:
    """A class's identity across checkpoints and data: its WNID, or its name where it has
    none (image folders without WNIDs)."""
    return wnid or name


@dataclasses.dataclass(frozen=True, eq=False)
class InputContract:
    """What the network expects [paper §2].

    classes: (wnid, name) of each output, in label order.
    image_size: the network's input side; resize_size: the shorter side images are
        rescaled to before the centre crop (256 for the paper's 224).
    mean: "channel" (subtract `mean_rgb`) or "pixel" (subtract the window of
        `mean_image` under the crop).
    mean_rgb: the per-channel mean, R, G, B, on the 0-255 scale.
    mean_image: the per-pixel mean (resize_size, resize_size, 3), RGB, 0-255, float32;
        only with mean="pixel".
    channel_order: the order the first layer reads ("BGR" for Caffe's weights); images
        come in as RGB and are reordered after the mean is taken off.
    pixel_scale: the value of a full-intensity pixel (255: the 0-255 scale).
    """

    classes: tuple[tuple[str, str], ...]
    image_size: int
    resize_size: int
    mean: str
    mean_rgb: tuple[float, float, float]
    mean_image: np.ndarray | None = None
    channel_order: str = "RGB"
    pixel_scale: float = 255.0

    def __post_init__(self):
        if self.mean not in MEAN_MODES:
            raise AlexNetError(f"mean must be one of {MEAN_MODES}, got {self.mean!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise AlexNetError(f"channel_order must be one of {CHANNEL_ORDERS}, got "
                               f"{self.channel_order!r}")
        if self.mean == "pixel":
            if self.mean_image is None:
                raise AlexNetError("mean='pixel' needs the mean image (mean_image.npy next to "
                                   "the shards; write it with `python -m tfrecords_tools stats`)")
            expected = (self.resize_size, self.resize_size, 3)
            if tuple(self.mean_image.shape) != expected:
                raise AlexNetError(f"the mean image is {tuple(self.mean_image.shape)}, expected "
                                   f"{expected} (resize_size {self.resize_size})")

    @property
    def wnids(self) -> list[str]:
        return [wnid for wnid, _ in self.classes]

    @property
    def names(self) -> list[str]:
        """Display names: the class name, or the WNID where there is none."""
        return [name or wnid for wnid, name in self.classes]

    # --- building one -----------------------------------------------------------------

    @classmethod
    def from_data(cls, data_dir: str | Path | DatasetInfo, image_size: int,
                  mean: str = "channel", *, num_classes: int | None = None,
                  stats: ImageStats | None = None) -> InputContract:
        """The contract of training on a shard directory (a path or its `DatasetInfo`):
        its `labels.txt` (or `num_classes` unnamed classes), and the mean of `stats.json`
        / `mean_image.npy` (ImageNet's per-channel values when there is no `stats.json`)."""
        info = DatasetInfo.of(data_dir)
        if info.classes is not None:
            classes = info.classes
        elif num_classes is not None:
            classes = tuple(("", f"class {i}") for i in range(num_classes))
        else:
            raise FileNotFoundError(f"{info.labels_path}: no labels file; pass the shard "
                                    f"directory written by `python -m tfrecords_tools "
                                    f"convert`")
        stats = stats or info.stats
        resize_size = resize_size_for(image_size)
        mean_image = None
        if mean == "pixel" and stats.mean_image is not None:
            # The mean image is stored at the shards' size on [0, 1]: bring it to the
            # square the crops are cut from, on the network's 0-255 scale.
            mean_image = tf.image.resize(tf.constant(stats.mean_image, tf.float32) * 255.0,
                                         (resize_size, resize_size)).numpy()
        return cls(classes, image_size, resize_size, mean,
                   tuple(float(v) * 255.0 for v in stats.mean_rgb), mean_image)

    # --- storing one ------------------------------------------------------------------

    def to_config(self) -> dict:
        """JSON-able fields, as the model's Keras config keeps them
        (`keras_alexnet.network.AlexNet`); the mean image is its float32 .npy, base64."""
        config = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        config["classes"] = [list(pair) for pair in self.classes]
        config["mean_rgb"] = list(self.mean_rgb)
        if self.mean_image is not None:
            buffer = io.BytesIO()
            np.save(buffer, self.mean_image.astype(np.float32))
            config["mean_image"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        return config

    @classmethod
    def from_config(cls, config: dict, mean_image: bytes | None = None) -> InputContract:
        """The contract `to_config` gave.  Checkpoints written before the contract was
        part of the model's config kept its mean image in a member of its own: pass that
        member's .npy bytes as `mean_image`."""
        if config.get("mean_image") is not None:
            mean_image = base64.b64decode(config["mean_image"])
        image = np.load(io.BytesIO(mean_image)) if mean_image is not None else None
        return cls(classes=tuple((str(w), str(n)) for w, n in config["classes"]),
                   image_size=int(config["image_size"]),
                   resize_size=int(config["resize_size"]), mean=config["mean"],
                   mean_rgb=tuple(float(v) for v in config["mean_rgb"]), mean_image=image,
                   channel_order=config.get("channel_order", "RGB"),
                   pixel_scale=float(config.get("pixel_scale", 255.0)))

    # --- using one --------------------------------------------------------------------

    def subtract_mean(self, images: tf.Tensor, top=None, left=None, shift=None) -> tf.Tensor:
        """0-255 RGB images (or one image) minus the mean, plus a colour `shift` (3,).

        Per pixel, the mean is the window of the `resize_size` square under the image
        (`top`, `left`; default the centre, as for the centre crop).  Per channel, mean
        and shift go in one pass.
        """
        mean = tf.constant(self.mean_rgb, tf.float32)
        if self.mean == "channel":
            return images - mean if shift is None else images + (shift - mean)
        size = images.shape[-2]
        top = (self.resize_size - size) // 2 if top is None else top
        left = (self.resize_size - size) // 2 if left is None else left
        top = tf.minimum(top, self.resize_size - size)  # non-square images: clamp
        left = tf.minimum(left, self.resize_size - size)
        window = tf.constant(self.mean_image, tf.float32)[top:top + size, left:left + size]
        images = images - window
        return images if shift is None else images + shift

    def to_network(self, images: tf.Tensor) -> tf.Tensor:
        """Mean-subtracted RGB -> the channel order the network reads."""
        return tf.reverse(images, axis=[-1]) if self.channel_order == "BGR" else images


def preprocess_input(images, contract: InputContract):
    """0-255 RGB images, already `contract.image_size` square crops -> the network's input.

    `images` is (N, S, S, 3) or (S, S, 3), numpy or a tensor; the result is float32 of
    the same kind: minus the mean (per pixel: the centre window, as for the centre crop),
    in the network's channel order.  Images of another size: rescale and crop them
    first, e.g. with `keras_alexnet.preprocessing.decode_center_crop`.
    """
    tensor = tf.convert_to_tensor(images, tf.float32)
    if tensor.shape[-3:] != (contract.image_size, contract.image_size, 3):
        raise AlexNetError(f"images must be {contract.image_size}x{contract.image_size} RGB "
                           f"crops, got shape {tuple(tensor.shape)}")
    result = contract.to_network(contract.subtract_mean(tensor))
    return result.numpy() if isinstance(images, np.ndarray) else result


def decode_predictions(probabilities, top: int = 5, *, contract: InputContract
                       ) -> list[list[tuple[str, str, float]]]:
    """The `top` classes of each row as (wnid, name, score), best first, from the
    model's own class list."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(contract.classes):
        raise AlexNetError(f"probabilities must be (N, {len(contract.classes)}), got "
                           f"{probabilities.shape}")
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    return [[(contract.classes[c][0], contract.names[c], float(row[c])) for c in indices]
            for row, indices in zip(probabilities, order, strict=True)]


def contract_of(model, data_dir: str | Path | DatasetInfo | None = None,
                source=None) -> InputContract:
    """The model's input contract (`model.input_contract`, as `checkpoints.load_model`
    and `fit` set it).  A model saved before contracts were recorded takes the classes
    and per-channel mean of the shard directory it was trained on, `data_dir`; without
    one, a ValueError says what to give, naming `source` (the checkpoint path the model
    came from; by default, or for a model object, the model's name)."""
    contract = getattr(model, "input_contract", None)
    if contract is not None:
        return contract
    source = (str(source) if isinstance(source, (str, os.PathLike, storage.Url))
              else f"model {model.name!r}")
    if data_dir is None:
        raise AlexNetError(f"{source} was saved without its input contract (classes, mean); "
                           f"give the shard directory it was trained on (data_dir, "
                           f"--data-dir), or resume its training once to record it")
    num_classes = model.output_shape[-1]
    info = DatasetInfo.of(data_dir)
    contract = InputContract.from_data(info, model.input_shape[1], "channel",
                                       num_classes=num_classes)
    if len(contract.classes) != num_classes:
        raise AlexNetError(f"{info.labels_path} lists {len(contract.classes)} classes "
                           f"but {source} outputs {num_classes}")
    return contract
