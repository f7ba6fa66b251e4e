"""Small learnable shard directories for the input pipeline, training and evaluation tests.

Each class is a colour and a stripe orientation under random brightness, phase and
noise, so a small network separates them in a few hundred steps while no single
pixel gives the label away.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_alexnet.config import reduced_config
from tests.fakes import write_fake_stats
from tfrecords_tools.schema import ImageRecord, serialize, shard_name

PALETTE = np.array([[200, 60, 60], [60, 170, 60], [70, 80, 210], [210, 190, 50],
                    [170, 70, 190], [60, 190, 200]], np.float32)


def class_image(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A uint8 RGB image of class `label`."""
    angle = np.pi * label / len(PALETTE)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 0.5 + phase)
    colour = PALETTE[label] * rng.uniform(0.7, 1.2)
    image = colour * (0.75 + 0.25 * stripes[..., None]) + rng.normal(0, 20, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_split(data_dir: Path, split: str, labels: list[int], *, size: int = 73,
                num_shards: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Writes `labels` as images into `num_shards` shards; returns the pixels written."""
    rng = np.random.default_rng(seed)
    pixels = [class_image(label, rng, size) for label in labels]
    for index in range(num_shards):
        path = data_dir / shard_name(split, index, num_shards)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for number in range(index, len(labels), num_shards):
                writer.write(serialize(ImageRecord(
                    jpeg(pixels[number]), size, size, f"{split}_{number:05d}.JPEG",
                    labels[number], f"n{labels[number]:08d}", f"class {labels[number]}")))
    return pixels


def make_dataset(data_dir: Path, num_classes: int = 4, train_per_class: int = 64,
                 validation_per_class: int = 16, size: int = 73) -> Path:
    """A converter-shaped directory: train/validation shards, labels.txt, stats.json."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    train = rng.permutation(np.repeat(np.arange(num_classes), train_per_class)).tolist()
    validation = np.repeat(np.arange(num_classes), validation_per_class).tolist()
    write_split(data_dir, "train", train, size=size, seed=2)
    write_split(data_dir, "validation", validation, size=size, seed=3)
    (data_dir / "labels.txt").write_text(
        "".join(f"n{label:08d}\tclass {label}\n" for label in range(num_classes)))
    write_fake_stats(data_dir)
    return data_dir


#: The reduced network of the training tests.
REDUCED = reduced_config(num_classes=4)

#: fit() arguments of the training tests: small batches, a reproducible stream, and a
#: schedule that divides the learning rate after every second epoch (no accuracy gain
#: reaches `min_delta`), so a resumed run shows whether it kept the rate.
FIT_ARGS = {"batch_size": 16, "learning_rate": 0.005, "patience": 1, "min_delta": 1.0,
            "seed": 7, "tensorboard": False, "verbose": 2}
