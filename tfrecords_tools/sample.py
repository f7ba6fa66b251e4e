"""Small ILSVRC-2012-shaped archives for tests and the demo.

The archives have the real layout: a train tar of per-class
`n########.tar`, a flat val tar, a devkit whose `meta.mat` numbers the classes in an
order that is NOT the sorted-WNID order, and an unlabeled test tar.  Every class is a
distinct hue with stripes at its own orientation, placed, scaled and noised at random,
so a small CNN learns them in a few epochs.
"""

from __future__ import annotations

import colorsys
import dataclasses
import gzip
import io
import math
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from tfrecords_tools.archives import DEVKIT, TRAIN_TAR, VAL_TAR
from tfrecords_tools.base.errors import ArgumentError

TEST_TAR = "ILSVRC2012_img_test.tar"

# The real ILSVRC2012_IDs 1..10: ID 1 is n02119789, while sorted index 0 of these ten
# is n02066245, so labels taken from the IDs directly would be wrong.
REAL_SYNSETS = (
    ("n02119789", "kit fox, Vulpes macrotis"),
    ("n02100735", "English setter"),
    ("n02110185", "Siberian husky"),
    ("n02096294", "Australian terrier"),
    ("n02102040", "English springer, English springer spaniel"),
    ("n02066245", "grey whale, gray whale, devilfish, Eschrichtius gibbosus, "
                  "Eschrichtius robustus"),
    ("n02509815", "lesser panda, red panda, panda, bear cat, cat bear, Ailurus fulgens"),
    ("n02124075", "Egyptian cat"),
    ("n02417914", "ibex, Capra ibex"),
    ("n02123394", "Persian cat"),
)

#: Member name -> the quirk it carries, for `quirks=True`.
QUIRK_KINDS = ("png", "cmyk", "grayscale", "truncated", "empty", "undecodable")


@dataclasses.dataclass(frozen=True)
class SampleArchives:
    """Paths of the generated archives and what a converter should make of them."""

    directory: Path
    train: Path
    validation: Path
    devkit: Path
    test: Path
    wnids: tuple[str, ...]  # sorted: index = 0-based label
    names: tuple[str, ...]  # class names, in label order
    validation_labels: tuple[int, ...]  # label of ILSVRC2012_val_00000001, 2, ...
    quirks: dict[str, str]  # member base name -> one of QUIRK_KINDS


def synsets(num_classes: int) -> list[tuple[str, str]]:
    """(WNID, words) in ILSVRC2012_ID order: the real first ten, then made-up ones."""
    entries = list(REAL_SYNSETS[:num_classes])
    # Made-up WNIDs interleave with the real ones when sorted, as the real IDs do.
    for index in range(len(entries), num_classes):
        entries.append((f"n{2000000 + index * 7919 % 600000:08d}", f"pattern class {index}"))
    if len({wnid for wnid, _ in entries}) != num_classes:
        raise ArgumentError(f"num_classes={num_classes} gives duplicate WNIDs")
    return entries


def class_image(label: int, num_classes: int, rng: np.random.Generator,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB uint8 image of class `label`: its hue and stripe angle on a noisy background."""
    height, width = size or (int(rng.integers(100, 401)), int(rng.integers(100, 401)))
    hue = label / num_classes
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.95)) * 255
    angle = math.pi * label / num_classes + rng.normal(0, 0.05)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # The object sits near the centre so that centre crops keep it.
    shorter = min(height, width)
    cy = height / 2 + rng.uniform(-0.15, 0.15) * height
    cx = width / 2 + rng.uniform(-0.15, 0.15) * width
    radius = shorter * rng.uniform(0.3, 0.5)
    inside = ((y - cy) ** 2 + (x - cx) ** 2) < radius**2
    period = shorter * rng.uniform(0.08, 0.14)
    stripes = np.sin((x * math.cos(angle) + y * math.sin(angle)) * (2 * math.pi / period)) > 0
    background = rng.uniform(60, 190, size=3)
    image = np.empty((height, width, 3), np.float32)
    image[:] = background
    image[inside & stripes] = colour
    image[inside & ~stripes] = colour * 0.35
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _quirk_bytes(kind: str, pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    if kind == "png":
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()
    if kind == "cmyk":
        return _jpeg(pixels, "CMYK")
    if kind == "grayscale":
        return _jpeg(pixels, "L")
    if kind == "truncated":
        data = _jpeg(pixels)
        return data[: len(data) // 2]
    if kind == "empty":
        return b""
    if kind == "undecodable":
        return b"\xff\xd8\xff\xe0 not really a JPEG " + rng.bytes(200)
    raise ArgumentError(f"unknown quirk {kind!r}; expected one of {QUIRK_KINDS}")


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1335744000  # fixed, so the archives are byte-identical for a seed
    archive.addfile(info, io.BytesIO(data))


#: MAT-file v5 header text (116 bytes); scipy's names the creation time, which would make
#: two builds with one seed differ.
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: tfrecords_tools.sample"


def _meta_mat(entries: list[tuple[str, str]], train_per_class: int) -> bytes:
    """`meta.mat` as in the real devkit: leaves 1..N with their `num_train_images`, then
    non-leaf synsets (whose count is 0)."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    # Two inner synsets, as the real file's 860 non-leaves follow the 1000 leaves.
    leaf_ids = list(range(1, len(entries) + 1))
    half = len(entries) // 2
    rows = [(i, wnid, words, f"gloss of {words}", 0, np.zeros((1, 0)), 0, train_per_class)
            for i, (wnid, words) in zip(leaf_ids, entries, strict=True)]
    rows.append((len(entries) + 1, "n00015388", "animal, animate being, beast", "a living organism",
                 half, np.array([leaf_ids[:half]], np.float64), 2, 0))
    rows.append((len(entries) + 2, "n00001740", "entity", "that which is perceived",
                 len(entries) - half, np.array([leaf_ids[half:]], np.float64), 3, 0))
    synset_array = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for index, (sid, wnid, words, gloss, n_children, children, height, count) in enumerate(rows):
        synset_array[index, 0] = (np.array([[sid]], np.float64), wnid, words, gloss,
                                  np.array([[n_children]], np.float64), children,
                                  np.array([[height]], np.float64),
                                  np.array([[count]], np.float64))
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synset_array})
    return MAT_HEADER.ljust(116) + buffer.getvalue()[116:]


def make_sample_archives(directory: str | Path, num_classes: int = 10, train_per_class: int = 30,
                         val_per_class: int = 5, test_images: int = 10, seed: int = 0,
                         quirks: bool = False) -> SampleArchives:
    """Writes the four ILSVRC-2012 archives into `directory` and returns their paths.

    With `quirks`, the first classes' tars carry a PNG named .JPEG, a CMYK, a grayscale,
    a truncated, a zero-byte and an undecodable member, and the val tar a CMYK and a
    grayscale image, as the real archives do (the last three kinds are damage the real
    ones do not have but a download can).
    """
    if num_classes < 2:
        raise ArgumentError(f"num_classes must be at least 2, got {num_classes}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = synsets(num_classes)
    ilsvrc_id = {wnid: i for i, (wnid, _) in enumerate(entries, 1)}
    wnids = tuple(sorted(ilsvrc_id))
    words = dict(entries)
    found_quirks: dict[str, str] = {}

    # Train: quirks replace the last images of the first classes (in sorted order).
    pending = list(QUIRK_KINDS) if quirks else []
    train = directory / TRAIN_TAR
    with tarfile.open(train, "w", format=tarfile.USTAR_FORMAT) as outer:
        for label, wnid in enumerate(wnids):
            inner_buffer = io.BytesIO()
            with tarfile.open(fileobj=inner_buffer, mode="w", format=tarfile.USTAR_FORMAT) as inner:
                for number in range(1, train_per_class + 1):
                    name = f"{wnid}_{number}.JPEG"
                    pixels = class_image(label, num_classes, rng)
                    if pending and number > train_per_class - 2:
                        kind = pending.pop(0)
                        found_quirks[name] = kind
                        data = _quirk_bytes(kind, pixels, rng)
                    else:
                        data = _jpeg(pixels)
                    _add(inner, name, data)
            _add(outer, f"{wnid}.tar", inner_buffer.getvalue())
    if pending:
        raise ArgumentError(f"quirks need at least {len(QUIRK_KINDS) // 2} classes")

    # Validation: classes shuffled over the file names, labels in the devkit's ground truth.
    val_labels = np.repeat(np.arange(num_classes), val_per_class)
    rng.shuffle(val_labels)
    val_quirks = ["cmyk", "grayscale"] if quirks else []
    validation = directory / VAL_TAR
    with tarfile.open(validation, "w", format=tarfile.USTAR_FORMAT) as archive:
        for number, label in enumerate(val_labels, 1):
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            pixels = class_image(int(label), num_classes, rng)
            if val_quirks:
                kind = val_quirks.pop(0)
                found_quirks[name] = kind
                _add(archive, name, _quirk_bytes(kind, pixels, rng))
            else:
                _add(archive, name, _jpeg(pixels))
    ground_truth = "".join(f"{ilsvrc_id[wnids[label]]}\n" for label in val_labels)

    devkit = directory / DEVKIT
    with gzip.GzipFile(devkit, "wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        _add(archive, "ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat(entries, train_per_class))
        _add(archive, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
             ground_truth.encode())
        _add(archive, "ILSVRC2012_devkit_t12/readme.txt", b"Sample ILSVRC2012 devkit.\n")

    test = directory / TEST_TAR
    with tarfile.open(test, "w", format=tarfile.USTAR_FORMAT) as archive:
        for number in range(1, test_images + 1):
            label = int(rng.integers(num_classes))
            _add(archive, f"ILSVRC2012_test_{number:08d}.JPEG",
                 _jpeg(class_image(label, num_classes, rng)))

    return SampleArchives(directory=directory, train=train, validation=validation, devkit=devkit,
                          test=test, wnids=wnids, names=tuple(words[w] for w in wnids),
                          validation_labels=tuple(int(label) for label in val_labels),
                          quirks=found_quirks)
