import gzip
import io
import shutil
import tarfile

import numpy as np
import pytest
import scipy.io

from tfrecords_tools.archives import (
    Archives,
    _plain_members,
    index_flat,
    index_train,
    label_train,
    label_validation,
)
from tfrecords_tools.devkit import ClassIndex, read_devkit
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import MemberReader


def test_devkit_labels_are_sorted_wnid_indices(sample_archives):
    devkit = read_devkit(sample_archives.devkit)
    assert devkit.classes.wnids == sample_archives.wnids
    assert devkit.classes.names == sample_archives.names
    assert devkit.wnid_of_id[1] == "n02119789"
    assert devkit.classes.label_of["n02119789"] == sample_archives.wnids.index("n02119789") != 0


def test_train_index_reads_each_image_with_one_seek(sample_archives):
    members, classes = label_train(sample_archives.train,
                                   index_train(sample_archives.train, progress=False))
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
    members, missing = label_validation(index_flat(sample_archives.validation), devkit,
                                        sample_archives.validation)
    assert [m.label for m in members] == list(sample_archives.validation_labels)
    assert missing == []


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
    # The val tar's problem, named as such, with the image it lacks.
    with pytest.raises(ArchiveError, match=r"ILSVRC2012_img_val.tar: has 49 of the 50 images "
                                           r"of the devkit's ground truth; missing 1 \(e.g. "
                                           r"ILSVRC2012_val_00000050.JPEG\)"):
        label_validation(index_flat(shorter), devkit, shorter)
    members, missing = label_validation(index_flat(shorter), devkit, shorter,
                                        allow_incomplete=True)
    assert (len(members), missing) == (49, [50])


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
        label_train(sample_archives.train, index_train(sample_archives.train, progress=False),
                    fewer)


def _train_tar(path, inner_tars):
    """A train tar holding `{wnid: (tarfile format, [(member name, bytes)])}`."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as outer:
        for wnid, (form, files) in inner_tars.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=form) as archive:
                for name, data in files:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                    if name.startswith("dir/"):
                        info = tarfile.TarInfo("dir")
                        info.type = tarfile.DIRTYPE
                        archive.addfile(info)
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = inner.tell()
            outer.addfile(info, io.BytesIO(inner.getvalue()))


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_inner_tars_of_every_format_index_alike(tmp_path, form):
    # Plain headers take the fast reader, long names (GNU, pax records, the ustar prefix),
    # directories and empty files tarfile's; both must find the same images.
    long_name = "n01443537_" + "3" * 120 + ".JPEG"
    files = {"n01440764": [(f"n01440764_{i}.JPEG", bytes([i]) * (100 + 700 * i))
                           for i in range(4)] + [("n01440764_empty.JPEG", b"")],
             "n01443537": [("dir/" + "d" * 99 + "/n01443537_1.JPEG", b"prefix"),
                           ("dir/n01443537_2.JPEG", b"dir")]}
    if form != tarfile.USTAR_FORMAT:  # which has no room for a long name without a slash
        files["n01443537"].append((long_name, b"long"))
    path = tmp_path / "ILSVRC2012_img_train.tar"
    _train_tar(path, {wnid: (form, members) for wnid, members in files.items()})
    index = index_train(path, progress=False)
    members, classes = label_train(path, index)
    # The helper adds a directory entry after each of the two files under dir/.
    assert index.not_images == 2 * [{"member": "n01443537.tar/dir",
                                     "reason": "a directory, not an image"}]
    expected = {name.rpartition("/")[2]: data for wnid in files for name, data in files[wnid]}
    with MemberReader(path) as reader:
        assert {m.name: reader.read(m) for m in members} == expected
    assert [classes.wnids[m.label] for m in members] == [n[:9] for n in expected]
    with open(path, "rb") as raw, tarfile.open(fileobj=raw) as outer:
        plain, other = (_plain_members(raw, info.offset_data, info.size) for info in outer)
    assert [name for name, _, _ in plain] == [name for name, _ in files["n01440764"]]
    assert other is None


def test_damaged_inner_tar_header_is_named(tmp_path):
    # The fast reader refuses the header; tarfile then reads it and words the error.
    path = tmp_path / "ILSVRC2012_img_train.tar"
    _train_tar(path, {"n01440764": (tarfile.USTAR_FORMAT, [("n01440764_0.JPEG", b"x")])})
    data = bytearray(path.read_bytes())
    data[512 + 148:512 + 156] = b"0000000\0"  # the first inner header's checksum
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"ILSVRC2012_img_train.tar: n01440764.tar is not "
                                           r"a readable tar"):
        index_train(path, progress=False)


def test_devkit_without_an_ilsvrc_id_field_is_named(tmp_path):
    synsets = np.empty((1, 1), dtype=[("ID", object), ("WNID", object)])
    synsets[0, 0] = (np.array([[1.0]]), "n01440764")
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    devkit = tmp_path / "devkit.tar.gz"
    with gzip.GzipFile(devkit, "wb") as compressed, \
            tarfile.open(fileobj=compressed, mode="w") as archive:
        info = tarfile.TarInfo("devkit/data/meta.mat")
        info.size = len(meta.getvalue())
        archive.addfile(info, io.BytesIO(meta.getvalue()))
    with pytest.raises(ArchiveError, match=rf"{devkit}: data/meta.mat's synsets have no "
                                           r"ILSVRC####_ID field \(fields: ID, WNID\)"):
        read_devkit(devkit)
