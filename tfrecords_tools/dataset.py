"""`DatasetInfo`: one reading of a shard directory, passed to everything that uses it.

As TensorFlow Datasets' `DatasetInfo`, it is built from the directory in one place
(`DatasetInfo.of`) and then handed on: the classes (`labels.txt`), the label convention
and the record counts (`manifest.json`), the shard files of each split and the pixel
statistics (`stats.json`, `mean_image.npy`) are read once, when first asked for, however
many consumers (the contract, the checks, the training and evaluation pipelines, the
pictures) look at them.  The file names and their formats are `schema`'s and `stats`'s.

A TFDS prepared dataset (`~/tensorflow_datasets/imagenet2012/5.1.0`, recognised by its
`dataset_info.json` and no `manifest.json`) is read the same way, from its metadata
(`tfds.read_prepared`): its classes are its label feature's names, its labels 0-based,
and `keys` says which Example keys hold the image, the label and the file name.
"""

from __future__ import annotations

import functools

from tfrecords_tools import schema, tfds
from tfrecords_tools.base import storage
from tfrecords_tools.errors import DatasetError
from tfrecords_tools.stats import ImageStats, load_stats


class DatasetInfo:
    """What a shard directory holds, each file read at most once."""

    def __init__(self, path: str | storage.PathOrUrl):
        self.path = storage.path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"data directory {self.path} does not exist; create it "
                                    f"with `python -m tfrecords_tools convert`")

    @classmethod
    def of(cls, path_or_info: str | storage.PathOrUrl | DatasetInfo) -> DatasetInfo:
        """`path_or_info` itself when it is already read, else a new one for the path."""
        return path_or_info if isinstance(path_or_info, DatasetInfo) else cls(path_or_info)

    def __repr__(self) -> str:
        return f"DatasetInfo({str(self.path)!r})"

    # --- a TFDS prepared dataset -------------------------------------------------------

    @functools.cached_property
    def prepared(self) -> tfds.Prepared | None:
        """The TFDS metadata when the directory is a TFDS prepared dataset, else None."""
        return tfds.read_prepared(self.path) if tfds.is_prepared(self.path) else None

    @property
    def keys(self) -> schema.RecordKeys:
        """The Example keys of the image, the label and the file name."""
        return self.prepared.keys if self.prepared else schema.KEYS

    # --- labels.txt and manifest.json ----------------------------------------------------

    @functools.cached_property
    def classes(self) -> tuple[tuple[str, str], ...] | None:
        """(WNID, name) of label i + `label_offset` on line i; None without labels.txt.
        A TFDS dataset's: (name, name) of its label feature's name i (a WNID for
        imagenet2012), as the converter names the classes of image folders."""
        if self.prepared:
            return self.prepared.classes
        path = self.path / schema.LABELS
        return tuple(schema.read_labels(path)) if path.exists() else None

    @property
    def labels_path(self) -> storage.PathOrUrl:
        """The file that names the classes."""
        return self.prepared.labels_path if self.prepared else self.path / schema.LABELS

    @functools.cached_property
    def manifest(self) -> dict | None:
        """`manifest.json`, or None when the directory has none."""
        return (schema.read_manifest(self.path)
                if (self.path / schema.MANIFEST).exists() else None)

    @functools.cached_property
    def label_offset(self) -> int:
        """0 (labels 0..N-1) or 1 (1..N, the Inception convention); 0 without a manifest
        or with one written before the option existed, and for TFDS (its ClassLabel
        counts from 0)."""
        offset = (self.manifest or {}).get("label_offset", 0)
        if offset not in schema.LABEL_OFFSETS:
            raise DatasetError(f"{self.path / schema.MANIFEST}: label_offset {offset!r}, "
                               f"expected one of {schema.LABEL_OFFSETS}")
        return offset

    # --- shards -----------------------------------------------------------------------------

    @functools.cached_property
    def _shards(self) -> dict[str, tuple[storage.PathOrUrl, ...]]:
        if self.prepared:
            return self.prepared.shards
        found = {split: [] for split in schema.SPLITS}
        for path in self.path.iterdir():  # one listing for every split
            for split in schema.SPLITS:
                if path.match(schema.shard_pattern(split)):
                    found[split].append(path)
        return {split: tuple(sorted(paths)) for split, paths in found.items()}

    def has_split(self, split: str) -> bool:
        return bool(self._shards.get(split))

    def shards(self, split: str) -> tuple[storage.PathOrUrl, ...]:
        """The split's shard files, sorted; a clear error when there are none."""
        if not self.has_split(split) and self.prepared:
            raise DatasetError(f"{self.path / tfds.DATASET_INFO}: no {split} split (of "
                               f"{', '.join(schema.SPLITS)} it has: "
                               f"{', '.join(self.prepared.shards) or 'none'})")
        if not self.has_split(split):
            raise FileNotFoundError(f"{self.path}: no {split} shards (files named "
                                    f"{schema.shard_pattern(split)}); create them with "
                                    f"`python -m tfrecords_tools convert`")
        return self._shards[split]

    @functools.cache  # noqa: B019 (the instance lives as long as its consumers)
    def records(self, split: str) -> int:
        """Records in a split: from `manifest.json` when it has the count, else counted
        by reading the shards (once)."""
        shards = self.shards(split)
        count = (self.prepared.records[split] if self.prepared else
                 (((self.manifest or {}).get("splits") or {}).get(split) or {}).get("records"))
        if isinstance(count, int):
            return count
        import tensorflow as tf

        from tfrecords_tools.base.progress import tqdm

        return sum(int(tf.data.TFRecordDataset(str(shard)).reduce(
            tf.constant(0, tf.int64), lambda n, _: n + 1))
                   for shard in tqdm(shards, desc=f"counting {split} records", unit="shard",
                                     leave=False))

    def class_counts(self, split: str) -> dict[str, int] | None:
        """Images a class in a split, by synset (the class folder's name for folders),
        from `manifest.json`; None where it does not count them."""
        counts = (((self.manifest or {}).get("splits") or {}).get(split) or {}).get(
            "class_counts")
        return dict(counts) if isinstance(counts, dict) and counts else None

    # --- stats.json and mean_image.npy ----------------------------------------------------

    @functools.cached_property
    def stats(self) -> ImageStats:
        """The training set's pixel statistics (ImageNet's without `stats.json`)."""
        return load_stats(self.path)
