"""Nearest training images by the Euclidean distance of fc7 features [paper §6.1, Figure 4 right].

The paper's evidence that the network's last hidden layer captures what an image
shows: training images whose fc7 vectors lie closest to a test image's are of the
same kind, even where their pixels are not close.  The training set's vectors are
computed once into an index directory and reused for every query:

    features.f32   (N, D) float32, raw, row i = fc7 of record i (memory-mapped)
    records.npz    shard name, offset in shard, label and file name of each row
    index.json     what the index was built from; written last, so a directory
                   without it is an interrupted build
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from keras_alexnet.contract import contract_of
from keras_alexnet.errors import AlexNetError
from keras_alexnet.figures.canvas import new_figure, save_png, short_name
from keras_alexnet.figures.examples import (
    Examples,
    fetch_examples,
    iterate_examples,
    load_examples,
)
from keras_alexnet.model import fc7_features
from tfrecords_tools.base.progress import tqdm
from tfrecords_tools.dataset import DatasetInfo

INDEX_VERSION = 1
QUERY_COLOUR = "#d62728"
CELL_WIDTH, CELL_HEIGHT, TILE = 120, 140, 100


def model_fingerprint(model: keras.Model) -> str:
    """A digest of the weights, so that an index is never reused for another model."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class NeighbourIndex:
    """fc7 vectors of one split, with where each image lives."""

    directory: Path
    info: dict
    features: np.ndarray  # (N, D), memory-mapped
    shards: list[str]
    offsets: np.ndarray
    labels: np.ndarray
    filenames: list[str]

    def __len__(self) -> int:
        return len(self.offsets)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest rows to each query: (indices, distances), nearest first."""
        return nearest(self.features, queries, k)

    def keys(self, rows: Sequence[int]) -> list[tuple[str, int]]:
        return [(self.shards[r], int(self.offsets[r])) for r in rows]


def nearest(features: np.ndarray, queries: np.ndarray, k: int,
            chunk_bytes: int = 1 << 27) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest neighbours by Euclidean distance, a chunk of rows at a time.

    The distance is computed from the differences, not from |a|^2 - 2ab + |b|^2,
    which cancels to a non-zero value for an image and itself.
    """
    queries = np.asarray(queries, np.float32)
    k = min(k, len(features))
    rows = max(1, chunk_bytes // (4 * features.shape[1]))
    best_rows = np.zeros((len(queries), 0), np.int64)
    best = np.zeros((len(queries), 0), np.float32)
    for start in range(0, len(features), rows):
        chunk = np.asarray(features[start:start + rows], np.float32)
        distances = np.stack([np.sqrt(np.einsum("ij,ij->i", chunk - q, chunk - q))
                              for q in queries])
        candidates = np.concatenate([best, distances], axis=1)
        candidate_rows = np.concatenate(
            [best_rows, np.broadcast_to(np.arange(start, start + len(chunk)), distances.shape)],
            axis=1)
        keep = np.argsort(candidates, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(candidates, keep, axis=1)
        best_rows = np.take_along_axis(candidate_rows, keep, axis=1)
    return best_rows, best


def build_index(model: keras.Model, data_dir: str | Path | DatasetInfo,
                index_dir: str | Path, split: str = "train", batch_size: int = 128
                ) -> NeighbourIndex:
    """Computes the fc7 vectors of every image of `split` into `index_dir`."""
    data_dir = DatasetInfo.of(data_dir)
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / "index.json").unlink(missing_ok=True)  # incomplete until rewritten
    extractor = fc7_features(model)
    contract = contract_of(model, data_dir)
    image_size = model.input_shape[1]
    shards, offsets, labels, filenames = [], [], [], []
    count = 0
    progress = tqdm(desc=f"fc7 index of {split}", unit="img",
                    total=data_dir.records(split))
    with open(index_dir / "features.f32", "wb") as out, progress:
        for batch in iterate_examples(data_dir, split, contract, batch_size):
            features = np.asarray(extractor.predict_on_batch(batch.network_input(contract)),
                                  np.float32)
            out.write(features.tobytes())
            shards += batch.shards
            offsets.append(batch.offsets)
            labels.append(batch.labels)
            filenames += batch.filenames
            count += len(batch)
            progress.update(len(batch))
    np.savez(index_dir / "records.npz", shards=np.array(shards), offsets=np.concatenate(offsets),
             labels=np.concatenate(labels), filenames=np.array(filenames))
    info = {"version": INDEX_VERSION, "count": count,
            "dimensions": int(extractor.output_shape[-1]), "image_size": image_size,
            **_source(model, data_dir, split)}
    (index_dir / "index.json").write_text(json.dumps(info, indent=2) + "\n")
    return load_index(index_dir)


def _source(model: keras.Model, data_dir: str | Path | DatasetInfo, split: str) -> dict:
    """What an index was computed from: the weights and the shards (name -> bytes), so
    that new weights or rewritten shards are never answered from a stale index."""
    info = DatasetInfo.of(data_dir)
    return {"fingerprint": model_fingerprint(model), "data_dir": str(info.path.resolve()),
            "split": split,
            "shards": {f.name: f.stat().st_size for f in info.shards(split)}}


def load_index(index_dir: str | Path) -> NeighbourIndex:
    """Opens an index written by `build_index`; the features stay on disk."""
    index_dir = Path(index_dir)
    info_path = index_dir / "index.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path}: missing; {index_dir} is not a complete fc7 "
                                f"index (build it with `build_index`)")
    info = json.loads(info_path.read_text())
    if info.get("version") != INDEX_VERSION:
        raise AlexNetError(f"{info_path}: index version {info.get('version')}, expected "
                           f"{INDEX_VERSION}; rebuild it")
    features = np.memmap(index_dir / "features.f32", np.float32, "r",
                         shape=(info["count"], info["dimensions"]))
    with np.load(index_dir / "records.npz") as records:
        return NeighbourIndex(index_dir, info, features, records["shards"].tolist(),
                              records["offsets"], records["labels"],
                              records["filenames"].tolist())


def open_index(model: keras.Model, data_dir: str | Path | DatasetInfo,
               index_dir: str | Path, split: str = "train", rebuild: bool = False
               ) -> tuple[NeighbourIndex, bool]:
    """The index for this model and split, reused when it exists and matches.

    Returns (index, built): `built` is False when an existing index was reused.
    """
    data_dir = DatasetInfo.of(data_dir)
    info_path = Path(index_dir) / "index.json"
    if not rebuild and info_path.exists():
        index = load_index(index_dir)
        source = _source(model, data_dir, split)
        if all(index.info.get(key) == value for key, value in source.items()):
            return index, False
    return build_index(model, data_dir, index_dir, split), True


def draw_neighbours(queries: Examples, neighbours: Sequence[Examples], distances: np.ndarray,
                    names: Sequence[str]) -> Figure:
    """One row per query: the query (framed) then its neighbours, nearest first."""
    k = distances.shape[1]
    width, height = (k + 1) * CELL_WIDTH, len(queries) * CELL_HEIGHT
    figure = new_figure(width, height)

    def tile(row, column, image, caption, colour="black"):
        left = column * CELL_WIDTH + (CELL_WIDTH - TILE) // 2
        top = row * CELL_HEIGHT + 8
        axes = figure.add_axes((left / width, 1 - (top + TILE) / height, TILE / width,
                                TILE / height))
        axes.imshow(image)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_xlabel(caption, fontsize=7, color=colour)
        return axes

    def name(label):
        return short_name(names[label]) if 0 <= label < len(names) else "(unlabeled)"

    for row in range(len(queries)):
        query = tile(row, 0, queries.images[row], f"query: {name(queries.labels[row])}",
                     QUERY_COLOUR)
        query.add_patch(Rectangle((0, 0), 1, 1, transform=query.transAxes, fill=False,
                                  edgecolor=QUERY_COLOUR, linewidth=4))
        for column in range(k):
            found = neighbours[row]
            tile(row, column + 1, found.images[column],
                 f"{name(found.labels[column])}\nd={distances[row, column]:.3g}")
    return figure


def write_neighbours(model: keras.Model, data_dir: str | Path | DatasetInfo,
                     path: str | Path, index_dir: str | Path,
                     query_split: str = "validation", count: int = 4,
                     start: int = 0, k: int = 6, index_split: str = "train",
                     rebuild_index: bool = False) -> Path:
    """Writes the nearest-neighbour picture for `count` images of `query_split`."""
    if k < 1:
        raise AlexNetError(f"k must be at least 1, got {k}")
    data_dir = DatasetInfo.of(data_dir)  # read once for the index, queries and neighbours
    index, _ = open_index(model, data_dir, index_dir, index_split, rebuild_index)
    contract = contract_of(model, data_dir)
    queries = load_examples(data_dir, query_split, contract, count, start)
    features = fc7_features(model).predict(queries.network_input(contract), verbose=0)
    rows, distances = index.search(features, k)
    k = rows.shape[1]  # fewer when the index is smaller than k
    found = fetch_examples(data_dir, index_split, contract, index.keys(rows.reshape(-1)))
    neighbours = [found.take(slice(i * k, (i + 1) * k)) for i in range(len(rows))]
    figure = draw_neighbours(queries, neighbours, distances, contract.names)
    return save_png(figure, path)
