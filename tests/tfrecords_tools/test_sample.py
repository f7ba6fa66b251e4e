import io
import itertools
import tarfile
import time

import numpy as np
import scipy.io
from PIL import Image

from tfrecords_tools.sample import QUIRK_KINDS, make_sample_archives


def _members(path):
    with tarfile.open(path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_layout_is_ilsvrc_2012(sample_archives):
    outer = _members(sample_archives.train)
    assert sorted(outer) == [f"{w}.tar" for w in sample_archives.wnids]
    with tarfile.open(fileobj=io.BytesIO(outer[f"{sample_archives.wnids[3]}.tar"])) as inner:
        assert inner.getnames() == [f"{sample_archives.wnids[3]}_{i}.JPEG" for i in range(1, 31)]
    val = _members(sample_archives.validation)
    assert sorted(val) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 51)]
    assert len(_members(sample_archives.test)) == 10
    assert list(sample_archives.wnids) == sorted(sample_archives.wnids)


def test_devkit_ids_are_not_in_sorted_wnid_order(sample_archives):
    devkit = _members(sample_archives.devkit)
    synsets = scipy.io.loadmat(io.BytesIO(devkit["ILSVRC2012_devkit_t12/data/meta.mat"]),
                               squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if s["num_children"] == 0]
    by_id = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    assert sorted(by_id) == list(range(1, 11))
    assert by_id[1] == "n02119789" and sample_archives.wnids[0] != by_id[1]
    assert len(synsets) > len(leaves)  # non-leaf synsets follow, as in the real file
    truth = devkit["ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"]
    ids = [int(line) for line in truth.split()]
    assert [sample_archives.wnids.index(by_id[i]) for i in ids] == list(
        sample_archives.validation_labels)


def test_quirks_are_what_they_claim(sample_archives):
    images = {}
    for data in _members(sample_archives.train).values():
        images.update(_members_of_bytes(data))
    images.update(_members(sample_archives.validation))
    assert sorted(set(sample_archives.quirks.values())) == sorted(QUIRK_KINDS)
    for name, kind in sample_archives.quirks.items():
        data = images[name]
        assert name.endswith(".JPEG")
        if kind == "empty":
            assert data == b""
        elif kind in ("png", "cmyk", "grayscale"):
            image = Image.open(io.BytesIO(data))
            assert (image.format, image.mode) == {"png": ("PNG", "RGB"), "cmyk": ("JPEG", "CMYK"),
                                                  "grayscale": ("JPEG", "L")}[kind]
        else:
            try:
                Image.open(io.BytesIO(data)).load()
            except (OSError, SyntaxError):
                continue
            raise AssertionError(f"{name} ({kind}) decodes")


def _members_of_bytes(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def test_devkit_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    # scipy stamps MAT files with time.asctime(): two builds a second apart must agree.
    clock = (f"Thu Jan  1 00:00:0{second} 1970" for second in itertools.count())
    monkeypatch.setattr(time, "asctime", lambda *args: next(clock))
    first, second = (make_sample_archives(tmp_path / name, num_classes=2, train_per_class=1,
                                          val_per_class=1, test_images=1, seed=3).devkit
                     for name in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()


def test_same_seed_same_bytes_and_classes_differ_in_colour(tmp_path):
    first = make_sample_archives(tmp_path / "a", num_classes=3, train_per_class=4,
                                 val_per_class=1, test_images=1, seed=7)
    second = make_sample_archives(tmp_path / "b", num_classes=3, train_per_class=4,
                                  val_per_class=1, test_images=1, seed=7)
    for name in ("train", "validation", "devkit", "test"):
        assert getattr(first, name).read_bytes() == getattr(second, name).read_bytes(), name
    # The learnable signal: each class's dominant hue differs.
    hues = []
    for _, data in sorted(_members(first.train).items()):
        pixels = [np.asarray(Image.open(io.BytesIO(d)).convert("HSV"))
                  for d in _members_of_bytes(data).values()]
        saturated = np.concatenate([p[p[..., 1] > 150][:, 0] for p in pixels])
        hues.append(np.median(saturated))
    assert min(np.diff(sorted(hues))) > 40, hues
