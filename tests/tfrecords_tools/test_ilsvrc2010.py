"""ILSVRC-2010: its devkit, the released test labels, patch_images.tar and gzip-compressed
members, converted with the 2012 path's guarantees (completeness, named damage)."""

import gzip
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.tfrecords_tools.conftest import ORIGINAL_RGB, PATCH_RGB
from tfrecords_tools import ilsvrc2010, schema
from tfrecords_tools.__main__ import main
from tfrecords_tools.archives import Archives
from tfrecords_tools.convert import convert
from tfrecords_tools.devkit import read_devkit
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.images import MAX_GUNZIPPED, ImageOptions, reencode
from tfrecords_tools.sources import find_source
from tfrecords_tools.verify import verify

ARGUMENTS = {"size": 32, "processes": 1, "progress": False}


@pytest.fixture
def archives(ilsvrc2010_archives, tmp_path):
    """A copy of the 2010 archives, to change."""
    directory = tmp_path / "archives"
    shutil.copytree(ilsvrc2010_archives.directory, directory)
    return directory


@pytest.fixture(scope="module")
def converted(ilsvrc2010_archives, tmp_path_factory):
    output = tmp_path_factory.mktemp("shards2010")
    summary = convert(output, ilsvrc2010_archives.directory, **ARGUMENTS)
    return output, summary


def _records(directory, split):
    return [{k: v.numpy() for k, v in tf.io.parse_single_example(r, schema.FEATURES).items()}
            for f in sorted(directory.glob(schema.shard_pattern(split)))
            for r in tf.data.TFRecordDataset(str(f))]


def _lines(text: bytes) -> list[int]:
    return [int(line) for line in text.split()]


def test_the_devkit_numbers_classes_by_ilsvrc2010_id(ilsvrc2010_archives):
    devkit = read_devkit(ilsvrc2010_archives.path(ilsvrc2010.DEVKIT))
    ids = ilsvrc2010_archives.ids
    assert devkit.prefix == "ILSVRC2010"
    assert devkit.classes.wnids == ilsvrc2010_archives.wnids
    assert devkit.wnid_of_id == {i: w for w, i in ids.items()}
    # ID order is not label order: labels taken from the IDs would be wrong.
    assert [ids[w] for w in devkit.classes.wnids] != sorted(ids.values())
    assert devkit.train_counts == dict.fromkeys(ids, 6)
    with tarfile.open(ilsvrc2010_archives.path(ilsvrc2010.DEVKIT)) as kit:
        truth = kit.extractfile("devkit-1.0/data/ILSVRC2010_validation_ground_truth.txt")
        assert list(devkit.ground_truth) == _lines(truth.read())


def test_the_test_ground_truth_labels_the_test_images(ilsvrc2010_archives, tmp_path):
    devkit = read_devkit(ilsvrc2010_archives.path(ilsvrc2010.DEVKIT))
    path = ilsvrc2010_archives.path(ilsvrc2010.TEST_TRUTH)
    labelled = ilsvrc2010.read_test_truth(path, devkit)
    assert list(labelled.test_ground_truth) == _lines(path.read_bytes())
    assert labelled.number_of("test", "ILSVRC2010_test_00000012.JPEG") == 12
    assert labelled.number_of("test", "ILSVRC2012_test_00000012.JPEG") is None
    wrong = tmp_path / ilsvrc2010.TEST_TRUTH
    wrong.write_text("3\n1001\n")
    with pytest.raises(ArchiveError, match=rf"{wrong}: the test ground truth uses ILSVRC2010_IDs "
                                           rf"\[1001\] that are not leaf synsets"):
        ilsvrc2010.read_test_truth(wrong, devkit)
    wrong.write_text("3\nseven\n")
    with pytest.raises(ArchiveError, match=rf"{wrong}: not a ground truth of one ID a line"):
        ilsvrc2010.read_test_truth(wrong, devkit)


def test_patch_images_by_split_and_base_name(ilsvrc2010_archives, tmp_path):
    path = ilsvrc2010_archives.path(ilsvrc2010.PATCHES)
    patches = ilsvrc2010.read_patches(path)
    with tarfile.open(path) as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert {split: sorted(p) for split, p in patches.items()} == {
        split: [name] for split, name in ilsvrc2010_archives.replaced.items()}
    for by_name in patches.values():
        for patch in by_name.values():
            assert patch.data == expected[patch.member]
    for names, error in ((["patch_images/extra/x.JPEG"], r"member patch_images/extra/x.JPEG "
                                                         r"is not in a folder named train, val, "
                                                         r"test"),
                         (["a/val/x.JPEG", "b/val/x.JPEG"], r"member b/val/x.JPEG replaces "
                                                            r"a/val/x.JPEG's image again")):
        stray = tmp_path / "patch_images.tar"
        with tarfile.open(stray, "w") as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = 3
                tar.addfile(info, io.BytesIO(b"abc"))
        with pytest.raises(ArchiveError, match=rf"{stray}: {error}"):
            ilsvrc2010.read_patches(stray)
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(path) as tar:
        second = tar.getmembers()[1].offset
    data = bytearray(path.read_bytes())
    data[second + 148:second + 156] = b"0000000\0"  # a wrong header checksum
    damaged.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=rf"{damaged}: .*invalid tar header at byte {second}"):
        ilsvrc2010.read_patches(damaged)


def test_a_gzip_compressed_jpeg_is_decompressed_and_recorded():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    options = ImageOptions(size=32)
    plain = reencode(buffer.getvalue(), options)
    packed = reencode(gzip.compress(buffer.getvalue()), options)
    assert packed.encoded == plain.encoded and not plain.repaired
    assert packed.repaired == "gzip-compressed data decompressed"
    assert reencode(gzip.compress(buffer.getvalue())[:100], options).skipped == \
        "undecodable: gzip data cut short"
    assert reencode(b"\x1f\x8b" + b"\0" * 20, options).skipped.startswith(
        "undecodable: gzip data that does not decompress")
    bomb = gzip.compress(bytes(MAX_GUNZIPPED + 1), compresslevel=1)
    assert reencode(bomb, options).skipped == \
        f"undecodable: gzip data of over {MAX_GUNZIPPED} bytes"


def test_every_split_is_labelled_by_its_ground_truth(converted, ilsvrc2010_archives):
    output, _ = converted
    expected = ilsvrc2010_archives
    assert schema.read_labels(output / "labels.txt") == list(
        zip(expected.wnids, expected.names, strict=True))
    for split, labels in expected.labels.items():
        records = _records(output, split)
        assert {r["image/filename"].decode(): r["image/class/label"] for r in records} == labels
        for record in records:
            assert record["image/class/synset"].decode() == expected.wnids[
                record["image/class/label"]]
    manifest = json.loads((output / "manifest.json").read_text())["splits"]
    assert manifest["test"]["expected"] == {"images": 12}
    assert manifest["validation"]["expected"] == {"images": 12}
    assert set(manifest["train"]["expected"]["class_counts"].values()) == {6}


def _mean_rgb(record):
    return np.asarray(Image.open(io.BytesIO(record["image/encoded"])), np.float32).mean((0, 1))


def test_patch_images_replace_their_originals(converted, ilsvrc2010_archives):
    output, summary = converted
    manifest = json.loads((output / "manifest.json").read_text())["splits"]
    for split, name in ilsvrc2010_archives.replaced.items():
        (record,) = [r for r in _records(output, split) if r["image/filename"].decode() == name]
        assert np.abs(_mean_rgb(record) - PATCH_RGB).max() < 8
        assert np.abs(_mean_rgb(record) - ORIGINAL_RGB).max() > 200
        folder = {v: k for k, v in ilsvrc2010.PATCH_FOLDERS.items()}[split]
        assert [r["repair"] for r in manifest[split]["repaired"] if r["member"] == name] == [
            f"replaced by patch_images.tar member patch_images/{folder}/{name}"]
        assert summary.replaced[split] == 1
    assert "images replaced from the patch tar: train 1, validation 1, test 1" in str(summary)


def test_gzip_compressed_members_are_converted(converted, ilsvrc2010_archives):
    output, _ = converted
    manifest = json.loads((output / "manifest.json").read_text())["splits"]
    repaired = {r["member"]: r["repair"] for entry in manifest.values()
                for r in entry["repaired"]}
    for name in ilsvrc2010_archives.gzipped:
        assert repaired[name] == "gzip-compressed data decompressed"
    assert not any(entry["skipped"] for entry in manifest.values())


def _rewrite(source, target, keep):
    with tarfile.open(source) as old, tarfile.open(target, "w",
                                                   format=tarfile.USTAR_FORMAT) as new:
        for member in old.getmembers():
            if keep(member):
                new.addfile(member, old.extractfile(member))


def test_test_tar_short_of_the_test_ground_truth_is_named(archives, ilsvrc2010_archives,
                                                          tmp_path):
    test = archives / ilsvrc2010.TEST_TAR
    _rewrite(ilsvrc2010_archives.path(ilsvrc2010.TEST_TAR), test,
             lambda m: m.name != "ILSVRC2010_test_00000009.JPEG")
    with pytest.raises(ArchiveError, match=rf"{test}: has 11 of the 12 images of the test "
                                           rf"ground truth; missing 1 \(e.g. "
                                           rf"ILSVRC2010_test_00000009.JPEG\)\. Download the "
                                           rf"test tar again"):
        convert(tmp_path / "out", archives, splits=["test"], **ARGUMENTS)
    convert(tmp_path / "out", archives, splits=["test"], allow_incomplete=True, **ARGUMENTS)
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["test"]
    assert entry["incomplete"] == {"damage": "", "missing": ["ILSVRC2010_test_00000009.JPEG"]}
    assert entry["records"] == 11


def test_train_class_short_of_num_train_images_is_named(archives, ilsvrc2010_archives,
                                                        tmp_path):
    wnid = ilsvrc2010_archives.wnids[2]
    _rewrite(ilsvrc2010_archives.path(ilsvrc2010.TRAIN_TAR), archives / ilsvrc2010.TRAIN_TAR,
             lambda m: m.name != f"{wnid}.tar")
    with pytest.raises(ArchiveError, match=rf"1 of the 6 classes are missing or short of the "
                                           rf"devkit's num_train_images \({wnid} has 0 of 6\)"):
        convert(tmp_path / "out", archives, splits=["train"], **ARGUMENTS)


def test_damaged_val_tar_is_named_with_where_reading_stopped(archives, ilsvrc2010_archives,
                                                             tmp_path):
    val = archives / ilsvrc2010.VAL_TAR
    with tarfile.open(val) as tar:
        fifth = tar.getmembers()[4]
    data = bytearray(val.read_bytes())
    data[fifth.offset + 148:fifth.offset + 156] = b"0000000\0"
    val.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=rf"{val}: has 4 of the 12 images of the devkit's "
                                           rf"ground truth.*invalid tar header at byte "
                                           rf"{fifth.offset}"):
        convert(tmp_path / "out", archives, splits=["validation"], **ARGUMENTS)


def test_a_patch_without_its_original_is_an_error(archives, ilsvrc2010_archives, tmp_path):
    patches = archives / ilsvrc2010.PATCHES
    with tarfile.open(patches, "a") as tar:
        info = tarfile.TarInfo("patch_images/val/ILSVRC2010_val_00000099.JPEG")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\xff\xd8\xff\xd9"))
    with pytest.raises(ArchiveError, match=rf"{patches}: member patch_images/val/"
                                           rf"ILSVRC2010_val_00000099.JPEG replaces no image of "
                                           rf"{archives / ilsvrc2010.VAL_TAR}"):
        convert(tmp_path / "out", archives, splits=["validation"], **ARGUMENTS)
    convert(tmp_path / "out", archives, splits=["validation"], allow_incomplete=True,
            **ARGUMENTS)
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["validation"]
    assert entry["incomplete"]["unused_patches"] == [
        "patch_images/val/ILSVRC2010_val_00000099.JPEG"]
    assert entry["records"] == 12
    assert [r["member"] for r in entry["repaired"] if r["repair"].startswith("replaced")] == [
        ilsvrc2010_archives.replaced["validation"]]


def test_without_its_ground_truth_the_test_split_is_unlabelled_and_still_patched(
        archives, ilsvrc2010_archives, tmp_path):
    (archives / ilsvrc2010.TEST_TRUTH).unlink()
    summary = convert(tmp_path / "out", archives, splits=["test"], **ARGUMENTS)
    records = _records(tmp_path / "out", "test")
    assert {r["image/class/label"] for r in records} == {schema.UNLABELED}
    (patched,) = [r for r in records
                  if r["image/filename"].decode() == ilsvrc2010_archives.replaced["test"]]
    assert np.abs(_mean_rgb(patched) - PATCH_RGB).max() < 8
    assert summary.replaced["test"] == 1


def test_a_directory_of_the_2010_files_is_found_by_their_names(ilsvrc2010_archives):
    directory = ilsvrc2010_archives.directory
    assert find_source(directory) == Archives(
        directory / ilsvrc2010.TRAIN_TAR, directory / ilsvrc2010.VAL_TAR,
        directory / ilsvrc2010.TEST_TAR, directory / ilsvrc2010.DEVKIT,
        directory / ilsvrc2010.TEST_TRUTH, directory / ilsvrc2010.PATCHES)


def test_the_command_line_takes_the_2010_files_under_other_names(ilsvrc2010_archives, tmp_path,
                                                                 capsys):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for name in (ilsvrc2010.TEST_TAR, ilsvrc2010.DEVKIT, ilsvrc2010.TEST_TRUTH,
                 ilsvrc2010.PATCHES):
        shutil.copy(ilsvrc2010_archives.path(name), renamed / f"my-{name}")
    assert main(["convert", str(renamed), str(tmp_path / "out"), "--splits", "test",
                 "--test-tar", str(renamed / f"my-{ilsvrc2010.TEST_TAR}"),
                 "--devkit", str(renamed / f"my-{ilsvrc2010.DEVKIT}"),
                 "--test-ground-truth", str(renamed / f"my-{ilsvrc2010.TEST_TRUTH}"),
                 "--patch-images", str(renamed / f"my-{ilsvrc2010.PATCHES}"),
                 "--size", "32", "-j", "1", "--quiet"]) == 0
    assert "images replaced from the patch tar: test 1" in capsys.readouterr().out
    records = _records(tmp_path / "out", "test")
    assert {r["image/filename"].decode(): r["image/class/label"] for r in records} == \
        ilsvrc2010_archives.labels["test"]


def test_the_labelled_test_split_is_counted_by_class_and_verifies(converted):
    output, _ = converted
    manifest = json.loads((output / "manifest.json").read_text())
    test = manifest["splits"]["test"]
    assert sum(test["class_counts"].values()) == test["records"] > 0
    assert verify(output, processes=2, progress=False) == []
