"""Damaged and incomplete archives: an error naming the archive, the classes and where
reading stopped, never a silent short conversion; `--allow-incomplete` records it."""

import io
import json
import shutil
import tarfile

import pytest

from tests.conftest import SAMPLE_IMAGE_SIZE, SAMPLE_SHARDS
from tfrecords_tools.__main__ import main
from tfrecords_tools.archives import TRAIN_TAR, VAL_TAR
from tfrecords_tools.convert import convert
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.verify import verify

ARGUMENTS = {**SAMPLE_SHARDS, "size": SAMPLE_IMAGE_SIZE, "processes": 1,
             "progress": False}


@pytest.fixture
def archives(sample_archives, tmp_path):
    """A copy of the sample archives, to damage."""
    directory = tmp_path / "archives"
    shutil.copytree(sample_archives.directory, directory)
    return directory


def _outer_members(path):
    with tarfile.open(path) as outer:
        return outer.getmembers()


def _corrupt_header(path, header_offset):
    data = bytearray(path.read_bytes())
    data[header_offset + 148:header_offset + 156] = b"0000000\0"  # a wrong checksum
    path.write_bytes(bytes(data))


def test_bad_outer_header_names_the_offset_and_the_classes_lost(archives, sample_archives,
                                                                tmp_path):
    train = archives / TRAIN_TAR
    third = _outer_members(train)[2]
    _corrupt_header(train, third.offset)
    with pytest.raises(ArchiveError) as raised:
        convert(tmp_path / "out", archives, splits=["train"], **ARGUMENTS)
    message = str(raised.value)
    assert f"{train}: 8 of the 10 classes are missing or short" in message
    assert f"{sample_archives.wnids[2]} has 0 of 30" in message
    assert f"has an invalid tar header at byte {third.offset} (after member " \
           f"{sample_archives.wnids[1]}.tar)" in message
    assert "--allow-incomplete" in message
    assert not list((tmp_path / "out").glob("train-*"))


def test_bad_inner_header_is_not_a_silent_end_of_the_class(archives, sample_archives, tmp_path):
    train = archives / TRAIN_TAR
    first = _outer_members(train)[0]
    with tarfile.open(fileobj=io.BytesIO(train.read_bytes()[
            first.offset_data:first.offset_data + first.size])) as inner:
        tenth = inner.getmembers()[9]
    _corrupt_header(train, first.offset_data + tenth.offset)
    with pytest.raises(ArchiveError, match=rf"{sample_archives.wnids[0]} has 9 of 30.*"
                                           rf"{sample_archives.wnids[0]}.tar has an invalid tar "
                                           rf"header at byte {first.offset_data + tenth.offset}"):
        convert(tmp_path / "out", archives, splits=["train"], **ARGUMENTS)


def _rewrite_train(source, target, keep):
    """The train tar with only the inner tars `keep(index, member)` accepts."""
    with tarfile.open(source) as outer, tarfile.open(target, "w",
                                                     format=tarfile.USTAR_FORMAT) as out:
        for index, member in enumerate(outer.getmembers()):
            if keep(index, member):
                out.addfile(member, outer.extractfile(member))


def test_missing_class_tar_is_named_and_allow_incomplete_records_it(archives, sample_archives,
                                                                     tmp_path):
    _rewrite_train(sample_archives.train, archives / TRAIN_TAR, lambda i, _: i != 4)
    missing = sample_archives.wnids[4]
    with pytest.raises(ArchiveError, match=rf"1 of the 10 classes are missing or short of the "
                                           rf"devkit's num_train_images \({missing} has 0 of 30\)"):
        convert(tmp_path / "out", archives, splits=["train"], **ARGUMENTS)
    summary = convert(tmp_path / "out", archives, splits=["train"], allow_incomplete=True,
                      **ARGUMENTS)
    assert summary.merged == ["train"] and missing in str(summary)
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"]
    assert entry["incomplete"] == {"damage": "", "classes": {missing: [0, 30]}}
    assert entry["expected"]["class_counts"][missing] == 30
    assert entry["records"] == 270 - 3
    # verify reports the recorded shortfall, and a devkit check agrees.
    problems = verify(tmp_path / "out", progress=False, devkit=archives /
                      "ILSVRC2012_devkit_t12.tar.gz")
    assert problems == [f"train: converted with --allow-incomplete: "
                        f"{json.dumps(entry['incomplete'], sort_keys=True)}"]


def test_tar_cut_at_a_class_boundary(archives, sample_archives, tmp_path):
    train = archives / TRAIN_TAR
    sixth = _outer_members(train)[6]
    train.write_bytes(train.read_bytes()[:sixth.offset])  # ends after six whole classes
    with pytest.raises(ArchiveError) as raised:
        convert(tmp_path / "out", archives, splits=["train"], **ARGUMENTS)
    assert f"{train}: 4 of the 10 classes are missing" in str(raised.value)
    assert f"ends without the end-of-archive marker at byte {sixth.offset}" in str(raised.value)


def test_stray_files_in_val_are_listed_not_blamed_on_the_devkit(archives, sample_archives,
                                                                tmp_path):
    val = archives / VAL_TAR
    with tarfile.open(sample_archives.validation) as source, tarfile.open(val, "w") as out:
        for member in source.getmembers():
            out.addfile(member, source.extractfile(member))
        for name in ("._ILSVRC2012_val_00000001.JPEG", "README.txt"):
            info = tarfile.TarInfo(name)
            info.size = 4
            out.addfile(info, io.BytesIO(b"junk"))
        link = tarfile.TarInfo("latest.JPEG")
        link.type, link.linkname = tarfile.SYMTYPE, "ILSVRC2012_val_00000001.JPEG"
        out.addfile(link)
    convert(tmp_path / "out", archives, splits=["validation"], **ARGUMENTS)
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["validation"]
    assert entry["records"] == 50
    assert sorted((s["member"], s["reason"].split(",")[0], s["shard"])
                  for s in entry["skipped"]) == [
        ("._ILSVRC2012_val_00000001.JPEG", "a hidden file (a copy's stray", None),
        ("README.txt", "not an ILSVRC2012_val_%08d image name", None),
        ("latest.JPEG", "a symbolic link", None)]
    assert verify(tmp_path / "out", progress=False) == []


def test_val_tar_short_of_the_ground_truth_exits_2_naming_the_val_tar(archives,
                                                                       sample_archives,
                                                                       tmp_path, capsys):
    val = archives / VAL_TAR
    with tarfile.open(sample_archives.validation) as source, tarfile.open(val, "w") as out:
        for member in source.getmembers():
            if member.name != "ILSVRC2012_val_00000007.JPEG":
                out.addfile(member, source.extractfile(member))
    assert main(["convert", str(archives), str(tmp_path / "out"), "--splits", "validation",
                 "--validation-shards", "2", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert f"{val}: has 49 of the 50 images of the devkit's ground truth; missing 1 (e.g. " \
           f"ILSVRC2012_val_00000007.JPEG)" in error


def test_hard_links_are_read_through_their_target(archives, sample_archives, tmp_path):
    # A class tar whose last image is a hard link to the first: the same bytes, both kept.
    train = archives / TRAIN_TAR
    with tarfile.open(sample_archives.train) as source, tarfile.open(train, "w") as out:
        for index, member in enumerate(source.getmembers()):
            if index:
                out.addfile(member, source.extractfile(member))
                continue
            with tarfile.open(fileobj=source.extractfile(member)) as inner:
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as rebuilt:
                    images = inner.getmembers()
                    for image in images[:-1]:
                        rebuilt.addfile(image, inner.extractfile(image))
                    link = tarfile.TarInfo(images[-1].name)
                    link.type, link.linkname = tarfile.LNKTYPE, images[0].name
                    rebuilt.addfile(link)
            info = tarfile.TarInfo(member.name)
            info.size = buffer.tell()
            out.addfile(info, io.BytesIO(buffer.getvalue()))
    convert(tmp_path / "out", archives, splits=["train"], **ARGUMENTS)
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"]
    assert entry["class_counts"][sample_archives.wnids[0]] == 30
    assert not [s for s in entry["skipped"] if s["member"].startswith(sample_archives.wnids[0])]
