"""A tar of per-class tars (ImageNet's Fall 2009 and Fall 2011 releases): the validation
split held out of it, and small classes set aside, as ImageNet-21K-P does; the same
options on image folders."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest

from tests.tfrecords_tools.conftest import FOLDER_TRAIN_COUNTS, image_bytes
from tests.tfrecords_tools.test_convert import _records
from tfrecords_tools import schema
from tfrecords_tools.__main__ import main

COUNTS = {"n00000003": 3, "n00000006": 6, "n00000008": 8, "n00000005": 5}


def make_class_tar(path, counts: dict[str, int]):
    """A tar of per-class `n########.tar`s of small JPEGs, `counts` images each, in the
    order given (not sorted: the archive's order is its own)."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as outer:
        for wnid, count in counts.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for number in range(count):
                    data = image_bytes(rng, size=(24, 20))
                    info = tarfile.TarInfo(f"{wnid}_{count - number}.JPEG")  # not sorted
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = len(inner.getvalue())
            outer.addfile(info, io.BytesIO(inner.getvalue()))
    return path


def convert(*argv) -> int:
    return main(["convert", *map(str, argv), "--size", "32", "-j", "1", "--quiet"])


def test_the_first_k_of_each_class_held_out_and_small_classes_set_aside(tmp_path):
    archive = make_class_tar(tmp_path / "fall.tar", COUNTS)
    output = tmp_path / "out"
    assert convert(archive, output, "--validation-per-class", 2,
                   "--min-images-per-class", 4) == 0
    kept = ["n00000005", "n00000006", "n00000008"]  # sorted; n00000003 has 3 < 4
    assert schema.read_labels(output / schema.LABELS) == [(w, w) for w in kept]
    manifest = json.loads((output / schema.MANIFEST).read_text())
    for split in ("train", "validation"):
        entry = manifest["splits"][split]
        assert entry["set_aside"] == {"n00000003": 3}
        assert entry["arguments"]["validation_per_class"] == 2
        assert entry["arguments"]["min_images_per_class"] == 4
    assert manifest["splits"]["validation"]["class_counts"] == dict.fromkeys(kept, 2)
    assert manifest["splits"]["train"]["class_counts"] == {
        wnid: COUNTS[wnid] - 2 for wnid in kept}
    # The first two of each class in the archive's order (named count, count - 1, ...).
    validation = {r["image/filename"].decode(): int(r["image/class/label"])
                  for r in _records(output, "validation")}
    assert validation == {f"{wnid}_{COUNTS[wnid] - i}.JPEG": label
                          for label, wnid in enumerate(kept) for i in range(2)}
    train = {r["image/filename"].decode() for r in _records(output, "train")}
    assert not train & set(validation) and len(train) == sum(COUNTS[w] - 2 for w in kept)
    assert main(["verify", str(output), "--quiet"]) == 0


def test_a_fraction_of_each_class_held_out_seeded(tmp_path):
    archive = make_class_tar(tmp_path / "fall.tar", COUNTS)
    names = []
    for seed, output in ((0, tmp_path / "a"), (0, tmp_path / "b"), (1, tmp_path / "c")):
        assert convert(archive, output, "--validation-fraction", 0.4, "--seed", seed) == 0
        names.append(sorted(r["image/filename"] for r in _records(output, "validation")))
    assert names[0] == names[1] != names[2]
    manifest = json.loads((tmp_path / "a" / schema.MANIFEST).read_text())
    # round(0.4 n), at least one, never all: 3 -> 1, 6 -> 2, 8 -> 3, 5 -> 2.
    assert manifest["splits"]["validation"]["class_counts"] == {
        "n00000003": 1, "n00000005": 2, "n00000006": 2, "n00000008": 3}
    assert manifest["splits"]["validation"]["arguments"]["validation_fraction"] == 0.4
    assert "set_aside" not in manifest["splits"]["train"]


@pytest.mark.parametrize("flags, message", [
    (["--validation-per-class", 3], "error: --validation-per-class 3: class n00000003 of "
                                    "{archive} has 3 images, none left to train on; lower K "
                                    "or set such classes aside with --min-images-per-class 4"),
    (["--min-images-per-class", 7], "error: --min-images-per-class 7: leaves 1 of the 4 "
                                    "classes of {archive} (the largest has 8 images); a "
                                    "classifier needs at least two"),
    (["--validation-per-class", 1, "--validation-fraction", 0.1],
     "error: --validation-fraction and --validation-per-class: give one"),
    (["--validation-per-class", 0], "error: --validation-per-class 0: must be at least 1"),
    (["--splits", "test"], "error: --splits test: {archive} has no test split"),
])
def test_bad_hold_outs_are_one_line_naming_the_class_and_write_nothing(tmp_path, capsys,
                                                                        flags, message):
    archive = make_class_tar(tmp_path / "fall.tar", COUNTS)
    assert convert(archive, tmp_path / "out", *flags) == 1
    err = capsys.readouterr().err
    assert err.startswith(message.format(archive=archive)) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_ilsvrc_archives_keep_their_devkits_splits(sample_archives, tmp_path, capsys):
    assert convert(sample_archives.directory, tmp_path / "out",
                   "--validation-per-class", 2) == 1
    assert capsys.readouterr().err.startswith(
        "error: --validation-per-class: applies to image folders and tars of per-class "
        "tars;")


def test_folders_take_the_same_options(image_folders, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(image_folders / "train", flat, symlinks=True)
    (flat / "tiny").mkdir()
    for name in ("0.jpg", "1.jpg"):
        shutil.copy(flat / "bees" / name, flat / "tiny" / name)
    output = tmp_path / "out"
    assert convert(flat, output, "--validation-per-class", 1, "--min-images-per-class", 3) == 0
    manifest = json.loads((output / schema.MANIFEST).read_text())
    assert manifest["splits"]["train"]["set_aside"] == {"tiny": 2}
    validation = manifest["splits"]["validation"]
    # One file of each class held out (a file that is no image is skipped, and named).
    held = {c: validation["class_counts"][c] + sum(
        s.get("synset") == c for s in validation["skipped"]) for c in FOLDER_TRAIN_COUNTS}
    assert held == dict.fromkeys(FOLDER_TRAIN_COUNTS, 1)
    assert [c for c, _ in schema.read_labels(output / schema.LABELS)] == sorted(
        FOLDER_TRAIN_COUNTS)
