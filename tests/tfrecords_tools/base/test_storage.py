"""`tfrecords_tools.base.storage` and the atomic write of `tfrecords_tools.base.files` on a URL:
TensorFlow's in-process `ram://` file system stands in for a bucket."""

import sys
from pathlib import Path

import pytest

from tests.ram_files import fresh_dir
from tfrecords_tools.base import files, storage
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.dataset import DatasetInfo


@pytest.fixture
def ram_dir():
    with fresh_dir() as url:
        yield url


def test_a_local_path_stays_a_pathlib_path(tmp_path):
    assert storage.path(str(tmp_path)) == tmp_path
    assert isinstance(storage.path(tmp_path / "x"), Path)
    assert not storage.is_url(str(tmp_path)) and storage.is_url("gs://bucket/run")


def test_a_url_is_named_as_a_path_is():
    url = storage.path("ram://bucket/run/")
    child = url / "checkpoints" / "epoch-0001.keras"
    assert str(child) == "ram://bucket/run/checkpoints/epoch-0001.keras"
    assert (child.name, child.suffix) == ("epoch-0001.keras", ".keras")
    assert child.parent.parent == url
    assert str(child.with_name("backup.keras")) == "ram://bucket/run/checkpoints/backup.keras"
    assert child.match("epoch-????.keras") and not child.match("backup.*")
    assert str(url / Path("assets.extra") / "warmup") == "ram://bucket/run/assets.extra/warmup"


def test_files_on_a_url_list_read_and_raise_as_local_ones(ram_dir):
    (ram_dir / "a" / "b").mkdir()
    (ram_dir / "a" / "one.txt").write_text("één\n")
    (ram_dir / "a" / "two.bin").write_bytes(b"\0\1")
    folder = ram_dir / "a"
    assert sorted(p.name for p in folder.iterdir()) == ["b", "one.txt", "two.bin"]
    assert [p.name for p in folder.glob("*.txt")] == ["one.txt"]
    assert (folder / "one.txt").read_text() == "één\n"
    assert (folder / "two.bin").stat().st_size == 2
    assert (folder / "b").is_dir() and (folder / "one.txt").is_file()
    assert not (folder / "b").is_file() and not (folder / "none").exists()
    with pytest.raises(FileNotFoundError, match=r"ram://.*/a/none"):
        (folder / "none").read_text()
    with pytest.raises(FileNotFoundError):
        (folder / "none").unlink()
    (folder / "none").unlink(missing_ok=True)
    (folder / "two.bin").replace(folder / "three.bin")
    assert sorted(p.name for p in folder.iterdir()) == ["b", "one.txt", "three.bin"]


def test_an_atomic_write_to_a_url_leaves_the_old_file_when_it_fails(ram_dir):
    target = ram_dir / "manifest.json"
    files.write_atomically(str(target), "first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError, match="killed"), files.atomic_path(target) as local:
        assert isinstance(local, Path)  # the block writes a local file
        local.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "first\n"
    files.write_atomically(target, "second\n")
    assert target.read_text() == "second\n"
    assert [p.name for p in ram_dir.iterdir()] == ["manifest.json"]  # no temporary left


def test_upload_tree_copies_the_named_files_last(ram_dir, tmp_path, monkeypatch):
    (tmp_path / "variables").mkdir()
    for name in ("saved_model.pb", "variables/variables.index", "fingerprint.pb"):
        (tmp_path / name).write_text(name)
    order = []
    upload = storage.upload
    monkeypatch.setattr(storage, "upload",
                        lambda source, target: (order.append(target.name), upload(source, target)))
    storage.upload_tree(tmp_path, ram_dir / "1", last=("saved_model.pb",))
    assert order[-1] == "saved_model.pb" and len(order) == 3
    assert (ram_dir / "1" / "variables" / "variables.index").read_text() == \
        "variables/variables.index"


@pytest.mark.parametrize(("url", "says"), [
    ("s3://bucket/shards", "s3:// URLs here; install tensorflow-io"),
    ("hdfs://namenode/shards", "hdfs:// URLs here; install tensorflow-io"),
    ("nosuch://bucket/shards", "nosuch:// URLs here; TensorFlow knows of no package"),
])
def test_a_scheme_tensorflow_cannot_open_is_one_line_naming_its_package(url, says):
    with pytest.raises(ArgumentError, match=says) as raised:
        DatasetInfo(url)
    assert str(raised.value).startswith(url) and "\n" not in str(raised.value)


def test_the_package_of_a_missing_scheme_is_imported_when_installed(tmp_path, monkeypatch):
    # tensorflow-io registers its file systems on import: a URL imports it for the user.
    (tmp_path / "tensorflow_io.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow_io", raising=False)
    with pytest.raises(ArgumentError, match="s3://"):  # this stand-in registers nothing
        storage.path("s3://bucket/shards")
    assert sys.modules["tensorflow_io"].IMPORTED
