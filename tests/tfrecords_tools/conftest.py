"""Fixtures of the converter's tests: image folders made of real files, and
ILSVRC-2010-shaped archives."""

import dataclasses
import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from tfrecords_tools import ilsvrc2010
from tfrecords_tools.sample import synsets

#: Class folders whose sorted order differs from case-folded or numeric order.
FOLDER_CLASSES = ("Zebra", "ants", "bees", "n01440764")
TRAIN_PER_CLASS, VAL_PER_CLASS = 5, 2

#: The real command, killed with SIGKILL the moment its first shard receipt is written
#: (at a known point, not by a race against a poll of the directory).
KILLED_AFTER_THE_FIRST_RECEIPT = """
import os, signal, sys
from tfrecords_tools import manifest
from tfrecords_tools.__main__ import main

write_receipt = manifest.write_receipt

def write_then_die(output, receipt):
    write_receipt(output, receipt)
    os.kill(os.getpid(), signal.SIGKILL)

manifest.write_receipt = write_then_die
sys.exit(main(sys.argv[1:]))
"""

#: The real command, killed with SIGKILL with its workers (its process group: start it
#: in a session of its own) the moment a forward pass's checkpoint records at least
#: $KILL_AFTER images.
KILLED_AT_A_CHECKPOINT = """
import json, os, signal, sys
from tfrecords_tools.base import files
from tfrecords_tools.__main__ import main

write_atomically = files.write_atomically

def write_then_die(path, text):
    write_atomically(path, text)
    if ".pass." in str(path) and json.loads(text)["position"] >= int(os.environ["KILL_AFTER"]):
        os.killpg(0, signal.SIGKILL)

files.write_atomically = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def image_bytes(rng, format="JPEG", size=(50, 40)) -> bytes:
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def make_image_folders(root: Path, seed: int = 0) -> Path:
    """`root/train/<class>/` (JPEGs, a PNG, one in a subfolder, a text file, a truncated
    JPEG, a hidden file, a symbolic link), `root/val/<class>/`, `root/test/`, a README."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for name in FOLDER_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for number in range(count):
                (folder / f"{number}.jpg").write_bytes(image_bytes(rng))
    ants = root / "train" / "ants"
    (ants / "deeper").mkdir()
    (ants / "deeper" / "0.jpg").write_bytes(image_bytes(rng))  # same base name as ants/0.jpg
    (ants / "drawing.png").write_bytes(image_bytes(rng, "PNG"))
    (ants / "notes.txt").write_text("not an image")
    (ants / "cut.jpg").write_bytes(image_bytes(rng)[:300])
    (ants / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    os.symlink("0.jpg", ants / "link.jpg")
    (root / "test").mkdir()
    for number in range(3):
        (root / "test" / f"{number}.jpg").write_bytes(image_bytes(rng))
    (root / "README").write_text("photos of insects\n")
    return root


#: What a converter makes of `make_image_folders`: train images per class, and skipped.
FOLDER_TRAIN_COUNTS = {"Zebra": 5, "ants": 7, "bees": 5, "n01440764": 5}
FOLDER_SKIPPED = {"README", "train/ants/.DS_Store", "train/ants/link.jpg",
                  "train/ants/notes.txt", "train/ants/cut.jpg"}


@pytest.fixture(scope="session")
def image_folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("folders") / "photos")


def tar_of(directory: Path, path: Path) -> Path:
    """`tar -cf path directory`: every member under the directory's name."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(directory, arcname=directory.name)
    return path


@dataclasses.dataclass(frozen=True)
class Ilsvrc2010:
    """ILSVRC-2010-shaped archives, and what a converter should make of them."""

    directory: Path
    wnids: tuple[str, ...]  # sorted: index = 0-based label
    names: tuple[str, ...]  # in label order
    ids: dict[str, int]  # WNID -> ILSVRC2010_ID (not in sorted order)
    labels: dict[str, dict[str, int]]  # split -> member base name -> label
    replaced: dict[str, str]  # split -> the base name patch_images.tar replaces
    gzipped: frozenset[str]  # base names of the gzip-compressed members

    def path(self, name: str) -> Path:
        return self.directory / name


def _member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1262304000
    archive.addfile(info, io.BytesIO(data))


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


#: The colours of a replaced original (blank, as ILSVRC-2010's) and of its replacement.
ORIGINAL_RGB, PATCH_RGB = (0, 0, 255), (255, 0, 0)


def _solid(rgb) -> bytes:
    return _jpeg(np.full((40, 56, 3), rgb, np.uint8))


def _meta_mat_2010(entries: list[tuple[str, str]], per_class: int) -> bytes:
    """devkit-1.0/data/meta.mat: the leaf synsets by ILSVRC2010_ID with their
    num_train_images, then an inner synset, and the cost matrix."""
    fields = ["ILSVRC2010_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = [(i, wnid, words, f"gloss of {words}", 0, np.zeros((1, 0)), 0, per_class)
            for i, (wnid, words) in enumerate(entries, 1)]
    rows.append((len(entries) + 1, "n00001740", "entity", "that which is perceived",
                 len(entries), np.arange(1, len(entries) + 1, dtype=np.float64)[None], 1, 0))
    table = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for index, row in enumerate(rows):
        table[index, 0] = tuple(np.array([[v]], np.float64) if isinstance(v, int) else v
                                for v in row)
    buffer = io.BytesIO()
    cost = 1 - np.eye(len(entries), dtype=np.uint8)
    scipy.io.savemat(buffer, {"synsets": table, "cost_matrix": cost})
    return buffer.getvalue()


def make_ilsvrc2010(directory: Path, num_classes: int = 6, train_per_class: int = 6,
                    val_images: int = 12, test_images: int = 12, seed: int = 0,
                    image_size: tuple[int, int] = (48, 64)) -> Ilsvrc2010:
    """The six ILSVRC-2010 files in `directory`: train (per-class tars), val and test
    tars, the devkit, the test ground truth and patch_images.tar, which replaces one
    (blank) image of each split; one image of each split is gzip-compressed."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = synsets(num_classes)  # in ID order, which is not sorted order
    ids = {wnid: i for i, (wnid, _) in enumerate(entries, 1)}
    wnids = tuple(sorted(ids))
    labels: dict[str, dict[str, int]] = {"train": {}, "validation": {}, "test": {}}
    replaced = {"train": f"{wnids[0]}_3.JPEG", "validation": "ILSVRC2010_val_00000002.JPEG",
                "test": "ILSVRC2010_test_00000005.JPEG"}
    gzipped = {f"{wnids[1]}_2.JPEG", "ILSVRC2010_val_00000004.JPEG",
               "ILSVRC2010_test_00000007.JPEG"}

    def image(split: str, name: str, label: int) -> bytes:
        labels[split][name] = label
        if name == replaced[split]:
            return _solid(ORIGINAL_RGB)
        data = _jpeg(rng.integers(0, 256, (*image_size, 3), np.uint8))  # noise: full size
        return gzip.compress(data, mtime=0) if name in gzipped else data

    with tarfile.open(directory / ilsvrc2010.TRAIN_TAR, "w", format=tarfile.USTAR_FORMAT) as outer:
        for label, wnid in enumerate(wnids):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as inner:
                for number in range(1, train_per_class + 1):
                    name = f"{wnid}_{number}.JPEG"
                    _member(inner, name, image("train", name, label))
            _member(outer, f"{wnid}.tar", buffer.getvalue())
    truths = {}
    for split, count, tar, part in (("validation", val_images, ilsvrc2010.VAL_TAR, "val"),
                                    ("test", test_images, ilsvrc2010.TEST_TAR, "test")):
        split_labels = rng.permutation(np.arange(count) % num_classes)
        with tarfile.open(directory / tar, "w", format=tarfile.USTAR_FORMAT) as archive:
            for number, label in enumerate(split_labels, 1):
                name = f"ILSVRC2010_{part}_{number:08d}.JPEG"
                _member(archive, name, image(split, name, int(label)))
        truths[split] = "".join(f"{ids[wnids[label]]}\n" for label in split_labels).encode()
    with gzip.GzipFile(directory / ilsvrc2010.DEVKIT, "wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.USTAR_FORMAT) as devkit:
        _member(devkit, "devkit-1.0/data/meta.mat", _meta_mat_2010(entries, train_per_class))
        _member(devkit, "devkit-1.0/data/ILSVRC2010_validation_ground_truth.txt",
                truths["validation"])
        _member(devkit, "devkit-1.0/readme.txt", b"ILSVRC2010 development kit\n")
    (directory / ilsvrc2010.TEST_TRUTH).write_bytes(truths["test"])
    with tarfile.open(directory / ilsvrc2010.PATCHES, "w", format=tarfile.USTAR_FORMAT) as patches:
        for folder, split in ilsvrc2010.PATCH_FOLDERS.items():
            _member(patches, f"patch_images/{folder}/{replaced[split]}", _solid(PATCH_RGB))
    return Ilsvrc2010(directory, wnids, tuple(dict(entries)[w] for w in wnids), ids, labels,
                      replaced, frozenset(gzipped))


@pytest.fixture(scope="session")
def ilsvrc2010_archives(tmp_path_factory):
    """Small ILSVRC-2010-shaped archives: read-only; copy them to change them."""
    return make_ilsvrc2010(tmp_path_factory.mktemp("ilsvrc2010"))
