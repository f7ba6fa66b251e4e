"""Images read back from converted shards: what the network sees, and what a person sees.

Every picture that runs the network on a dataset uses the evaluation view of an
image: the central crop of the 256x256 shard image [paper §4.1] at the model's
input size, minus the training mean [paper §2].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet.contract import InputContract, preprocess_input
from keras_alexnet.errors import AlexNetError
from keras_alexnet.preprocessing import decode_center_crop
from tfrecords_tools.dataset import DatasetInfo


@dataclasses.dataclass
class Examples:
    """A batch of images with where each came from."""

    images: np.ndarray  # (N, S, S, 3) uint8 centre crops, before mean subtraction
    labels: np.ndarray  # (N,) int64, -1 where unlabeled
    filenames: list[str]
    shards: list[str]  # the shard file name of each image
    offsets: np.ndarray  # (N,) record index of each image within its shard

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: slice | Sequence[int]) -> Examples:
        """The examples at `rows` (a slice or a list of positions)."""
        rows = np.arange(len(self))[rows]
        return Examples(self.images[rows], self.labels[rows],
                        [self.filenames[r] for r in rows], [self.shards[r] for r in rows],
                        self.offsets[rows])

    def network_input(self, contract: InputContract) -> np.ndarray:
        return preprocess_input(self.images.astype(np.float32), contract)

    @classmethod
    def concatenate(cls, parts: Sequence[Examples]) -> Examples:
        return cls(np.concatenate([p.images for p in parts]),
                   np.concatenate([p.labels for p in parts]),
                   [f for p in parts for f in p.filenames],
                   [s for p in parts for s in p.shards],
                   np.concatenate([p.offsets for p in parts]))


def iterate_examples(data_dir: str | Path | DatasetInfo, split: str,
                     contract: InputContract,
                     batch_size: int = 128, shards: Sequence[str] | None = None
                     ) -> Iterator[Examples]:
    """The split's images in file order, in batches, cropped as `contract` says; labels
    0-based whatever the shards' label offset.

    `shards`: only these shard file names (default: all of the split's shards).
    """
    info = DatasetInfo.of(data_dir)
    offset, fields, files = info.label_offset, info.keys, info.shards(split)
    if shards is not None:
        chosen = set(shards)
        files = [f for f in files if f.name in chosen]
    names = [f.name for f in files]

    def parse(shard_index, record_offset, record):
        features = tf.io.parse_single_example(record, fields.spec())
        image = tf.cast(tf.round(decode_center_crop(features[fields.image],
                                                    contract.image_size, contract.resize_size)),
                        tf.uint8)
        label = features[fields.label]
        label = tf.where(label >= 0, label - offset, label)  # -1: unlabeled
        return image, label, features[fields.filename], shard_index, record_offset

    def records(shard_index, path):
        return tf.data.TFRecordDataset(path).enumerate().map(
            lambda offset, record: (shard_index, offset, record))

    dataset = (tf.data.Dataset.from_tensor_slices((tf.range(len(files), dtype=tf.int64),
                                                   [str(f) for f in files]))
               .flat_map(records)
               .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(batch_size)
               .prefetch(1))
    for images, labels, filenames, shard_indices, offsets in dataset.as_numpy_iterator():
        yield Examples(images, labels, [f.decode() for f in filenames],
                       [names[i] for i in shard_indices], offsets)


def load_examples(data_dir: str | Path | DatasetInfo, split: str,
                  contract: InputContract, count: int,
                  start: int = 0) -> Examples:
    """Images `start` .. `start + count - 1` of the split, in file order."""
    if count < 1 or start < 0:
        raise AlexNetError(f"need count >= 1 and start >= 0, got count={count}, start={start}")
    parts, seen = [], 0
    for batch in iterate_examples(data_dir, split, contract, batch_size=min(count, 128)):
        part = batch.take(slice(max(0, start - seen), max(0, start + count - seen)))
        seen += len(batch)
        if len(part):
            parts.append(part)
        if seen >= start + count:
            break
    if not parts:
        raise AlexNetError(f"{DatasetInfo.of(data_dir).path}: the {split} split has {seen} "
                           f"images, none from "
                           f"index {start}")
    return Examples.concatenate(parts)


def fetch_examples(data_dir: str | Path | DatasetInfo, split: str,
                   contract: InputContract,
                   keys: Sequence[tuple[str, int]]) -> Examples:
    """The images at (shard name, offset) `keys`, in the order given.

    Reads only the shards named, each up to the last offset wanted.
    """
    wanted: dict[str, set[int]] = {}
    for shard, offset in keys:
        wanted.setdefault(shard, set()).add(int(offset))
    found = {}
    for batch in iterate_examples(data_dir, split, contract, shards=sorted(wanted)):
        for i, (shard, offset) in enumerate(zip(batch.shards, batch.offsets, strict=True)):
            if int(offset) in wanted[shard]:
                found[shard, int(offset)] = i, batch
        if all((s, o) in found for s, offsets in wanted.items() for o in offsets):
            break
    missing = [key for key in keys if (key[0], int(key[1])) not in found]
    if missing:
        raise AlexNetError(f"{data_dir}: no {split} records at {missing[:5]} (shard, offset); "
                           f"were the shards rewritten after the index was built?")
    return Examples.concatenate([batch.take([i]) for i, batch in
                                 (found[shard, int(offset)] for shard, offset in keys)])
