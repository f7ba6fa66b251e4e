"""Image folders (and a tar of per-class tars) through the converter: the classes as Keras
and torchvision see them, and everything the ILSVRC path guarantees."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tfrecords_tools.conftest import (
    FOLDER_CLASSES,
    FOLDER_SKIPPED,
    FOLDER_TRAIN_COUNTS,
    KILLED_AFTER_THE_FIRST_RECEIPT,
    VAL_PER_CLASS,
    make_image_folders,
    tar_of,
)
from tests.tfrecords_tools.test_convert import _outputs, _records
from tfrecords_tools import schema
from tfrecords_tools.__main__ import main
from tfrecords_tools.convert import convert
from tfrecords_tools.dataset import DatasetInfo
from tfrecords_tools.folders import FolderSource

ARGUMENTS = {"size": 32, "progress": False}


def torchvision_find_classes(directory):
    """torchvision.datasets.folder.find_classes, verbatim (torchvision 0.19)."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    class_to_idx = {cls_name: i for i, cls_name in enumerate(classes)}
    return classes, class_to_idx


@pytest.fixture(scope="module")
def folder_shards(image_folders, tmp_path_factory):
    output = tmp_path_factory.mktemp("folder-shards")
    convert(output, image_folders, processes=1, label_offset=1, **ARGUMENTS)
    return output


def test_classes_in_the_order_of_keras_and_torchvision(image_folders, folder_shards):
    import keras

    keras_classes = keras.utils.image_dataset_from_directory(
        image_folders / "train", image_size=(8, 8), batch_size=64, shuffle=False,
        verbose=False).class_names
    classes = [wnid for wnid, _ in schema.read_labels(folder_shards / schema.LABELS)]
    assert classes == keras_classes == torchvision_find_classes(image_folders / "train")[0]
    assert classes == ["Zebra", "ants", "bees", "n01440764"]


def test_records_labels_and_manifest(folder_shards):
    labels = schema.read_labels(folder_shards / schema.LABELS)
    assert labels == [(c, c) for c in sorted(FOLDER_CLASSES)]  # synset and text: the folder
    train = _records(folder_shards, "train")
    for record in train:
        synset = record["image/class/synset"].decode()
        filename = record["image/filename"].decode()
        assert filename.startswith(f"train/{synset}/")  # the path under the root
        assert labels[record["image/class/label"] - 1][0] == synset  # --label-offset 1
        assert record["image/class/text"].decode() == synset
    names = sorted(r["image/filename"].decode() for r in train)
    assert "train/ants/deeper/0.jpg" in names and "train/ants/drawing.png" in names
    manifest = json.loads((folder_shards / schema.MANIFEST).read_text())
    assert manifest["splits"]["train"]["class_counts"] == FOLDER_TRAIN_COUNTS
    assert manifest["splits"]["validation"]["class_counts"] == dict.fromkeys(
        sorted(FOLDER_CLASSES), VAL_PER_CLASS)
    assert manifest["splits"]["test"]["records"] == 3
    assert {r["image/class/label"] for r in _records(folder_shards, "test")} == {-1}
    skipped = {s["member"]: s["reason"] for s in manifest["splits"]["train"]["skipped"]}
    assert set(skipped) == FOLDER_SKIPPED
    assert skipped["train/ants/cut.jpg"].startswith("undecodable")
    assert skipped["train/ants/link.jpg"] == "a symbolic link, not an image"


def test_dataset_info_sees_the_classes_counts_and_offset(folder_shards):
    info = DatasetInfo(folder_shards)
    assert [wnid for wnid, _ in info.classes] == sorted(FOLDER_CLASSES)
    assert info.label_offset == 1
    assert info.records("train") == sum(FOLDER_TRAIN_COUNTS.values())
    assert info.records("validation") == VAL_PER_CLASS * len(FOLDER_CLASSES)
    assert info.records("test") == 3


def test_the_tar_gives_the_same_shards_whatever_the_processes(image_folders, folder_shards,
                                                              tmp_path):
    archive = tar_of(image_folders, tmp_path / "photos.tar")
    convert(tmp_path / "out", archive, processes=2, label_offset=1, **ARGUMENTS)
    ours, theirs = _outputs(tmp_path / "out"), _outputs(folder_shards)
    assert ours.pop("manifest.json") != theirs.pop("manifest.json")  # names its archive
    assert ours == theirs
    manifest = json.loads((tmp_path / "out" / schema.MANIFEST).read_text())
    assert {s["member"] for s in manifest["splits"]["train"]["skipped"]} == FOLDER_SKIPPED
    assert main(["verify", str(tmp_path / "out"), "--quiet"]) == 0


def test_validation_fraction_is_stratified_seeded_and_recorded(image_folders, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(image_folders / "train", flat, symlinks=True)
    for seed, output in ((0, tmp_path / "a"), (0, tmp_path / "b"), (1, tmp_path / "c")):
        convert(output, FolderSource(flat, validation_fraction=0.4), processes=1, seed=seed,
                **ARGUMENTS)
    manifest = json.loads((tmp_path / "a" / schema.MANIFEST).read_text())
    validation = manifest["splits"]["validation"]
    # round(0.4 n) of each class: 2 of 5, 4 of ants' 9 files (two of them not images).
    held = {c: validation["class_counts"][c] + sum(
        s.get("synset") == c for s in validation["skipped"]) for c in FOLDER_CLASSES}
    assert held == {"Zebra": 2, "ants": 4, "bees": 2, "n01440764": 2}
    assert validation["arguments"]["validation_fraction"] == 0.4
    assert manifest["splits"]["train"]["arguments"]["validation_fraction"] == 0.4

    def names(output):
        return sorted(r["image/filename"] for r in _records(output, "validation"))

    assert names(tmp_path / "a") == names(tmp_path / "b") != names(tmp_path / "c")
    train = {r["image/filename"] for r in _records(tmp_path / "a", "train")}
    assert not train & set(names(tmp_path / "a"))


def test_a_class_file_fixes_order_and_names(image_folders, tmp_path):
    class_file = tmp_path / "classes.txt"
    class_file.write_text("n01440764\ttench, Tinca tinca\nbees\tbees\nants\nZebra\tzebra\n")
    assert main(["convert", str(image_folders), str(tmp_path / "out"), "--classes",
                 str(class_file), "--size", "32", "-j", "1", "--quiet"]) == 0
    labels = schema.read_labels(tmp_path / "out" / schema.LABELS)
    assert labels == [("n01440764", "tench, Tinca tinca"), ("bees", "bees"), ("ants", "ants"),
                      ("Zebra", "zebra")]
    for record in _records(tmp_path / "out", "validation"):
        wnid, name = labels[record["image/class/label"]]
        assert record["image/class/synset"].decode() == wnid
        assert record["image/class/text"].decode() == name


def _error(capsys, *argv):
    code = main(["convert", *map(str, argv), "--size", "32", "-j", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    return err


def test_bad_input_is_a_one_line_error_naming_it_with_nothing_written(tmp_path, capsys):
    root = make_image_folders(tmp_path / "photos")
    out = tmp_path / "out"
    (root / "train" / "stray.jpg").write_bytes(b"x")
    assert f"{root}/train/stray.jpg: a file beside the class folders" in _error(
        capsys, root, out)
    (root / "train" / "stray.jpg").unlink()
    (root / "train" / "empty").mkdir()
    assert f"{root}/train/empty: a class folder without files" in _error(capsys, root, out)
    (root / "train" / "empty").rmdir()
    (root / "val" / "cats").mkdir()
    (root / "val" / "cats" / "0.jpg").write_bytes(b"x")
    assert f"{root}/val/cats: class 'cats' is not a class of {root}/train/" in _error(
        capsys, root, out)
    shutil.rmtree(root / "val" / "cats")
    class_file = tmp_path / "classes.txt"
    class_file.write_text("ants\nbees\nZebra\n")
    assert f"{root}/train/n01440764: class folder not listed in {class_file}" in _error(
        capsys, root, out, "--classes", class_file)
    class_file.write_text("ants\nbees\nZebra\nn01440764\nwasps\n")
    assert f"class 'wasps' of {class_file} has no folder of images" in _error(
        capsys, root, out, "--classes", class_file)
    assert "--validation-fraction: " in _error(capsys, root, out, "--validation-fraction", .2)
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path}/empty/: holds no images and none of the ILSVRC-2012 archives" in _error(
        capsys, tmp_path / "empty", out)
    assert not list(out.glob("*-of-*")) and not (out / schema.LABELS).exists()


def test_class_folders_under_test_make_a_labelled_test_split(tmp_path):
    # CIFAR-10's layout: test/<class>/ beside train/<class>/ (and here no val/).
    root = make_image_folders(tmp_path / "photos")
    shutil.rmtree(root / "val")
    shutil.rmtree(root / "test")
    for name in ("bees", "ants"):
        shutil.copytree(root / "train" / "bees", root / "test" / name)
    convert(tmp_path / "out", root, **ARGUMENTS)
    labels = [synset for synset, _ in schema.read_labels(tmp_path / "out" / schema.LABELS)]
    test = _records(tmp_path / "out", "test")
    assert len(test) == 10
    for record in test:
        folder = record["image/filename"].decode().split("/")[1]  # test/<class>/<file>
        assert labels[record["image/class/label"]] == folder
    manifest = json.loads((tmp_path / "out" / schema.MANIFEST).read_text())
    assert manifest["splits"]["test"]["class_counts"] == {"Zebra": 0, "ants": 5, "bees": 5,
                                                          "n01440764": 0}


def test_the_summary_counts_images_apart_from_skipped_files_and_names_a_changed_source(
        tmp_path, capsys):
    root = make_image_folders(tmp_path / "photos")
    summary = convert(tmp_path / "out", root, splits=["train"], **ARGUMENTS)
    # train/ants/cut.jpg and notes.txt do not decode: skipped, not images of the count.
    assert summary.images["train"] == sum(FOLDER_TRAIN_COUNTS.values())
    assert summary.skipped["train"] == 2
    assert str(summary).splitlines()[1].split()[:3] == [
        "train", str(sum(FOLDER_TRAIN_COUNTS.values())), "2"]
    other = shutil.copytree(root, tmp_path / "other")
    err = _error(capsys, other, tmp_path / "out", "--splits", "train")
    assert "holds train shards of another conversion (archive name: 'photos' there, " \
           "'other' here" in err and "{" not in err


def test_a_cut_tar_of_folders_converts_what_is_whole_with_allow_incomplete(image_folders,
                                                                           tmp_path, capsys):
    whole = tar_of(image_folders, tmp_path / "photos.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:len(whole) * 3 // 4])
    err = _error(capsys, cut, tmp_path / "out")
    assert f"{cut}: damaged; {cut}: truncated: member " in err and "--allow-incomplete" in err
    summary = convert(tmp_path / "out", cut, allow_incomplete=True, **ARGUMENTS)
    manifest = json.loads((tmp_path / "out" / schema.MANIFEST).read_text())
    converted = sum(split["records"] for split in manifest["splits"].values())
    assert 0 < converted < sum(FOLDER_TRAIN_COUNTS.values()) + VAL_PER_CLASS * len(
        FOLDER_CLASSES) + 3
    assert any(f"{cut}: truncated: member" in note or "truncated after member" in note
               for note in summary.incomplete), summary.incomplete
    assert "{" not in "".join(summary.incomplete)


def test_one_class_and_an_unknown_test_class_are_refused_naming_them(tmp_path, capsys):
    root = make_image_folders(tmp_path / "photos")
    (root / "test" / "wasps").mkdir()
    (root / "test" / "wasps" / "0.jpg").write_bytes((root / "test" / "0.jpg").read_bytes())
    for number in range(3):
        (root / "test" / f"{number}.jpg").unlink()
    assert f"{root}/test/wasps: class 'wasps' is not a class of {root}/train/" in _error(
        capsys, root, tmp_path / "out")
    flat = tmp_path / "flat"
    flat.mkdir()
    for number in range(2):
        (flat / f"n01440764_{number}.JPEG").write_bytes((root / "val" / "bees" / "0.jpg")
                                                        .read_bytes())
    assert f"{flat}/: image files and no class folders; a folder dataset has each class's " \
           f"images in a folder of its own, {flat}/<class>/" in _error(capsys, flat,
                                                                      tmp_path / "out")
    single = tmp_path / "single"
    shutil.copytree(root / "train" / "bees", single / "bees")
    assert f"{single}/: one class folder (bees/); a classifier needs at least two" in _error(
        capsys, single, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_finished_shards_are_kept_when_a_later_split_fails(tmp_path, capsys):
    root = make_image_folders(tmp_path / "photos")
    out = tmp_path / "out"
    assert main(["convert", str(root), str(out), "--splits", "validation", "--size", "32",
                 "-j", "1", "--quiet"]) == 0
    before = _outputs(out)
    (root / "train" / "empty").mkdir()
    assert "train/empty: a class folder without files" in _error(capsys, root, out)
    assert _outputs(out) == before


def test_a_tar_of_per_class_tars_needs_no_devkit(sample_archives, tmp_path, capsys):
    assert main(["convert", str(sample_archives.train), str(tmp_path), "--size", "32",
                 "-j", "2", "--quiet"]) == 0
    assert "manifest written for: train" in capsys.readouterr().out
    assert schema.read_labels(tmp_path / schema.LABELS) == [(w, w) for w in sample_archives.wnids]
    manifest = json.loads((tmp_path / schema.MANIFEST).read_text())
    counts = manifest["splits"]["train"]["class_counts"]
    skipped = manifest["splits"]["train"]["skipped"]
    assert list(counts) == list(sample_archives.wnids)
    assert sum(counts.values()) + len(skipped) == 300 and len(skipped) == 3
    assert manifest["splits"]["train"]["arguments"]["devkit"] is None
    assert "validation" not in manifest["splits"]  # none held out unless asked
    assert _error(capsys, sample_archives.train, tmp_path / "x", "--classes", "c.txt"
                  ).startswith("error: --classes: applies to image folders")


@pytest.mark.slow
def test_kill_9_then_resume_is_byte_identical(image_folders, tmp_path):
    archive = tar_of(image_folders, tmp_path / "photos.tar")
    reference = tmp_path / "reference"
    convert(reference, archive, processes=1, train_shards=3, **ARGUMENTS)
    arguments = ["convert", str(archive), str(tmp_path / "out"), "--size", "32", "--quiet",
                 "--train-shards", "3"]
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_FIRST_RECEIPT, *arguments,
                             "-j", "2"], env=environment, capture_output=True, timeout=300,
                            start_new_session=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "out" / schema.MANIFEST).exists()
    resumed = subprocess.run([sys.executable, "-m", "tfrecords_tools", *arguments, "-j", "1"],
                             env=environment, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _outputs(tmp_path / "out") == _outputs(reference)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_image_is_an_error_naming_it(tmp_path, capsys):
    root = make_image_folders(tmp_path / "photos")
    locked = root / "train" / "bees" / "0.jpg"
    locked.chmod(0)
    assert "train/bees/0.jpg" in _error(capsys, root, tmp_path / "out")
