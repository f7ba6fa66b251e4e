import io
import shutil
import tarfile

import pytest

from tfrecords_tools.archives import (
    Archives,
    ClassIndex,
    index_flat,
    index_train,
    label_validation,
    read_devkit,
)
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import MemberReader


def test_devkit_labels_are_sorted_wnid_indices(sample_archives):
    devkit = read_devkit(sample_archives.devkit)
    assert devkit.classes.wnids == sample_archives.wnids
    assert devkit.classes.names == sample_archives.names
    assert devkit.wnid_of_id[1] == "n02119789"
    assert devkit.classes.label_of["n02119789"] == sample_archives.wnids.index("n02119789") != 0


def test_train_index_reads_each_image_with_one_seek(sample_archives):
    members, classes = index_train(sample_archives.train, progress=False)
    assert len(members) == 300
    expected = {}
    with tarfile.open(sample_archives.train) as outer:
        for info in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(info)) as inner:
                expected.update({m.name: inner.extractfile(m).read() for m in inner})
    with MemberReader(sample_archives.train) as reader:
        for member in members:
            assert reader.read(member) == expected[member.name]
            assert classes.wnids[member.label] == member.name.split("_")[0]


def test_validation_labels_come_from_the_ground_truth(sample_archives):
    devkit = read_devkit(sample_archives.devkit)
    members = label_validation(index_flat(sample_archives.validation), devkit,
                               sample_archives.validation, sample_archives.devkit)
    assert [m.label for m in members] == list(sample_archives.validation_labels)


def test_truncated_archive_names_file_and_member(sample_archives, tmp_path):
    truncated = tmp_path / "ILSVRC2012_img_train.tar"
    data = sample_archives.train.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ArchiveError, match=r"ILSVRC2012_img_train.tar.*truncated.*member n\d+"):
        index_train(truncated, progress=False)


def test_missing_archive_is_named(tmp_path):
    archives = Archives.find(tmp_path)
    with pytest.raises(ArchiveError, match=r"ILSVRC2012_img_val\.tar"):
        archives.path_for("validation")
    with pytest.raises(ArchiveError, match="nowhere"):
        Archives.find(tmp_path / "nowhere")


def test_devkit_that_does_not_match_the_val_tar(sample_archives, tmp_path):
    shorter = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(sample_archives.validation) as full, tarfile.open(shorter, "w") as part:
        for info in full.getmembers()[:-1]:
            part.addfile(info, io.BytesIO(full.extractfile(info).read()))
    devkit = read_devkit(sample_archives.devkit)
    with pytest.raises(ArchiveError, match=r"ILSVRC2012_devkit_t12.tar.gz does not match .*"
                                           r"ILSVRC2012_img_val.tar: .* 50 lines, .* 49 images"):
        label_validation(index_flat(shorter), devkit, shorter, sample_archives.devkit)


def test_damaged_devkit_is_named(sample_archives, tmp_path):
    broken = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    shutil.copy(sample_archives.devkit, broken)
    broken.write_bytes(broken.read_bytes()[:300])
    with pytest.raises(ArchiveError, match=r"ILSVRC2012_devkit_t12\.tar\.gz"):
        read_devkit(broken)


def test_train_class_missing_from_the_devkit_is_named(sample_archives):
    devkit = read_devkit(sample_archives.devkit)
    fewer = ClassIndex(devkit.classes.wnids[1:], devkit.classes.names[1:])
    with pytest.raises(ArchiveError, match=rf"member {devkit.classes.wnids[0]} is not a class "
                                           r"of the devkit \(1 such classes\)"):
        index_train(sample_archives.train, fewer, progress=False)
