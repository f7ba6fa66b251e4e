"""Fixtures of the converter's tests: image folders made of real files."""

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
