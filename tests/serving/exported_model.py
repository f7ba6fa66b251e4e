"""A small real model, its data directory, real encoded images and their expected top-5.

Shared by the export, predict and serving tests.  The reduced AlexNet gets zero biases
and a wider weight spread than the paper's [paper §5], so that an untrained network
still tells images apart and a top-5 comparison means something.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.contract import InputContract
from keras_alexnet.preprocessing import decode_center_crop
from tests.fakes import FAKE_STATS, write_fake_stats

NUM_CLASSES = 10
IMAGE_SIZE = 64
MODEL_NAME = "alexnet"
CLASS_NAMES = [f"class {i} ({name})" for i, name in enumerate(
    ["tench", "goldfish", "white shark", "tiger shark", "hammerhead", "electric ray",
     "stingray", "cock", "hen", "ostrich"])]


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    model: object  # carries its input contract, as a trained one does
    checkpoint: Path  # the .keras file, with the contract
    data_dir: Path  # labels.txt + stats.json the contract was made from
    base: Path  # export base; the model is at base / MODEL_NAME / <version>
    images: dict[str, bytes]  # real JPEG and PNG files of several sizes

    @property
    def model_dir(self) -> Path:
        return self.base / MODEL_NAME


def build_test_model(seed: int = 3):
    """Seeded: the same weights whichever test builds it first (seed 3 tells the test
    images apart)."""
    config = keras_alexnet.reduced_config(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                                          biases_one=())
    return keras_alexnet.build_model(config, devices=("/CPU:0", "/CPU:0"), seed=seed)


def write_data_dir(path: Path) -> Path:
    """labels.txt and a stats.json whose mean differs from ImageNet's, so using it shows."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "labels.txt").write_text(
        "".join(f"n{i:08d}\t{name}\n" for i, name in enumerate(CLASS_NAMES)))
    write_fake_stats(path)
    return path


def encode(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


def make_images(seed: int = 0) -> dict[str, bytes]:
    """Real encoded images: smooth gradients and noise, landscape, portrait and square."""
    rng = np.random.default_rng(seed)
    images = {}
    for index, (height, width) in enumerate([(96, 128), (140, 80), (73, 73), (64, 200)]):
        y, x = np.mgrid[0:height, 0:width]
        gradient = np.stack([x * 255 / width, y * 255 / height,
                             np.full_like(x, 60 * index)], -1)
        noise = rng.uniform(0, 255, (height, width, 3))
        pixels = (0.6 * gradient + 0.4 * noise).astype(np.uint8)
        images[f"image{index}.jpg"] = encode(pixels, "JPEG")
    images["noise.png"] = encode(rng.integers(0, 256, (90, 110, 3), dtype=np.uint8), "PNG")
    images["gray.png"] = encode(rng.integers(0, 256, (80, 80), dtype=np.uint8), "PNG")
    return images


def keras_probabilities(model, mean_rgb, encoded: list[bytes]) -> np.ndarray:
    """The reference: evaluation's centre crop, minus the per-channel mean `mean_rgb`
    (0-255), then the Keras model."""
    batch = tf.stack([decode_center_crop(tf.constant(b), IMAGE_SIZE) for b in encoded])
    return model(batch - np.float32(mean_rgb), training=False).numpy()


#: The mean of `write_data_dir`'s stats.json on the 0-255 scale.
DATA_MEAN = [255 * m for m in FAKE_STATS["mean_rgb"]]


def expected_top5(model, encoded: list[bytes], mean_rgb=DATA_MEAN
                  ) -> list[list[tuple[str, float]]]:
    probabilities = keras_probabilities(model, mean_rgb, encoded)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    return [[(CLASS_NAMES[i], float(row[i])) for i in indices]
            for row, indices in zip(probabilities, order, strict=True)]


def assert_same_top5(actual, expected, atol: float = 1e-5) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert [name for name, _ in got] == [name for name, _ in want]
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=atol)


def make_exported_model(tmp: Path) -> ExportedModel:
    model = build_test_model()
    data_dir = write_data_dir(tmp / "data")
    model.input_contract = InputContract.from_data(data_dir, IMAGE_SIZE)
    checkpoint = checkpoints.save_checkpoint(model, tmp / "model.keras")
    base = tmp / "export"
    keras_alexnet.export(checkpoint, base, MODEL_NAME)
    return ExportedModel(model, checkpoint, data_dir, base, make_images())
