"""Training-input images/s per core: keras_alexnet.data against a PIL loader and bare decode.

Three loaders read the same 256x256 JPEG shards and deliver float32 batches:
  - keras_alexnet.data.training_dataset: the paper's augmentation [paper §4.1] (random
    224 crop fused with the decode, reflection, PCA lighting, mean subtraction);
  - a PIL + numpy loader doing the same augmentation record by record (the baseline);
  - JPEG decode alone (parse + full decode + cast, no augmentation): the limit.
Each loader runs on one thread (tf.data on a private one-thread pool with intra-op
parallelism 1), so images/s is per core.  Rounds alternate between the loaders, and
each round also reports images per CPU-second of the process, the steadier figure on a
shared machine.  Then the cost of a deterministic input order (`fit`'s default): the
pipeline on every core with `deterministic=True` against `False`, in alternating rounds.

    python benchmarks/input_pipeline.py --images 512 --rounds 5
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_alexnet import data
from keras_alexnet.config import TrainingOptions
from tfrecords_tools.schema import ImageRecord, serialize, shard_name
from tfrecords_tools.stats import ImageStats

SIZE, CROP = 256, 224


def photo(rng: np.random.Generator) -> bytes:
    """A 256x256 JPEG that compresses like a photo: shading, hard-edged blobs, grain."""
    low = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(low).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    for _ in range(3):
        cy, cx, radius = *rng.uniform(0, SIZE, 2), rng.uniform(20, 90)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius ** 2] = rng.uniform(0, 255, 3)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_shards(directory: Path, images: int, shards: int = 4) -> None:
    rng = np.random.default_rng(0)
    for index in range(shards):
        with tf.io.TFRecordWriter(str(directory / shard_name("train", index, shards))) as out:
            for number in range(index, images, shards):
                out.write(serialize(ImageRecord(photo(rng), SIZE, SIZE, f"{number}.JPEG",
                                                number % 10)))


def one_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def ours(directory: Path, batch: int, *, deterministic: bool = True, threads: int = 1):
    dataset = data.training_dataset(directory, CROP, batch, num_classes=10, seed=0,
                                    stats=ImageStats.imagenet(), shuffle_buffer=1024,
                                    deterministic=deterministic)
    return iter(one_thread(dataset) if threads == 1 else dataset)


def decode_only(directory: Path, batch: int):
    def decode(record):
        features = tf.io.parse_single_example(record, data.IMAGE_AND_LABEL)
        image = tf.cast(tf.io.decode_jpeg(features["image/encoded"], channels=3), tf.float32)
        return image, features["image/class/label"]

    files = sorted(str(p) for p in directory.glob("train-*"))
    dataset = (tf.data.TFRecordDataset(files).repeat().map(decode, tf.data.AUTOTUNE)
               .batch(batch).prefetch(tf.data.AUTOTUNE))
    return iter(one_thread(dataset))


def pil_loader(directory: Path, batch: int):
    """The baseline: the same augmentation with PIL and numpy, one record at a time."""
    stats = ImageStats.imagenet()
    mean = stats.mean_rgb * 255.0
    rng = np.random.default_rng(0)
    files = sorted(str(p) for p in directory.glob("train-*"))
    records = tf.data.TFRecordDataset(files).repeat().as_numpy_iterator()
    while True:
        images, labels = [], []
        for record in records:
            feature = tf.train.Example.FromString(record).features.feature
            image = Image.open(io.BytesIO(feature["image/encoded"].bytes_list.value[0]))
            top, left = rng.integers(0, SIZE - CROP + 1, 2)
            pixels = np.asarray(image.convert("RGB"), np.float32)[top:top + CROP,
                                                                   left:left + CROP]
            if rng.random() < 0.5:
                pixels = pixels[:, ::-1]
            alpha = rng.normal(0, TrainingOptions.lighting_stddev, 3)
            pixels = pixels - mean + 255.0 * stats.eigvec @ (alpha * stats.eigval)
            images.append(pixels)
            labels.append(feature["image/class/label"].int64_list.value[0])
            if len(images) == batch:
                break
        yield np.stack(images).astype(np.float32), np.array(labels)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(batches, count: int, batch: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) over `count` batches."""
    next(batches)  # warm up: tracing, shuffle buffer, first files
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(count):
        images, _ = next(batches)
    assert images.shape == (batch, CROP, CROP, 3) or images.shape == (batch, SIZE, SIZE, 3)
    return (count * batch / (time.perf_counter() - wall),
            count * batch / (cpu_seconds() - cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="JPEGs in the shards")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=5, help="medians over rounds")
    args = parser.parse_args()

    loaders = {"keras_alexnet.data": ours, "PIL + numpy": pil_loader,
               "decode only": decode_only}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        write_shards(directory, args.images)
        size = sum(p.stat().st_size for p in directory.glob("train-*")) / args.images
        print(f"{args.images} JPEGs of {SIZE}x{SIZE}, {size / 1024:.0f} KiB each; batch "
              f"{args.batch}; {args.batches} batches x {args.rounds} rounds; one thread")
        results = {name: [] for name in loaders}
        order = {True: [], False: []}
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                results[name].append(measure(loader(directory, args.batch), args.batches,
                                             args.batch))
            for deterministic, rates in order.items():
                rates.append(measure(ours(directory, args.batch, deterministic=deterministic,
                                          threads=0), args.batches, args.batch)[0])
        parallel = {key: statistics.median(rates) for key, rates in order.items()}

    medians = {name: [statistics.median(r[i] for r in rounds) for i in (0, 1)]
               for name, rounds in results.items()}
    base, limit = medians["PIL + numpy"], medians["decode only"]
    print("\n| loader | images/s (wall) | images/CPU-s | vs PIL | vs decode only |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in medians.items():
        print(f"| {name} | {wall:.0f} | {cpu:.0f} | {cpu / base[1]:.2f}x | "
              f"{cpu / limit[1]:.0%} |")
    print(f"\ndeterministic input order on {os.cpu_count()} cores: "
          f"{parallel[True]:.0f} images/s against {parallel[False]:.0f} non-deterministic "
          f"({parallel[True] / parallel[False]:.2f}x)")
    ratio_pil, ratio_limit = (medians["keras_alexnet.data"][1] / base[1],
                              medians["keras_alexnet.data"][1] / limit[1])
    print(f"\nper CPU-second: {ratio_pil:.2f}x the PIL loader (goal >= 2x: "
          f"{'met' if ratio_pil >= 2 else 'not met'}), {ratio_limit:.0%} of decode only "
          f"(goal >= 70%: {'met' if ratio_limit >= 0.7 else 'not met'})")


if __name__ == "__main__":
    main()
