import json
import shutil

import pytest

from tests.ram_files import fresh_dir
from tfrecords_tools.base import storage
from tfrecords_tools.verify import verify


@pytest.fixture
def copy(converted_shards, tmp_path):
    shutil.copytree(converted_shards, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_clean_shards_verify(converted_shards):
    assert verify(converted_shards, processes=2, progress=False) == []


def test_corrupted_shard_is_reported_by_shard_and_record(copy):
    shard = copy / "train-00001-of-00004"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify(copy, ["train"], progress=False)
    assert "train-00001-of-00004: sha256 differs from manifest.json (the file was changed)" in (
        problems)
    assert any(p.startswith("train-00001-of-00004: record ") and "corrupted record" in p
               for p in problems), problems
    assert any(p.startswith("train: class ") for p in problems)  # the histogram is short
    assert not any(p.startswith(("train-00000", "train-00002", "train-00003")) for p in problems)


def test_missing_and_unexpected_shards(copy):
    (copy / "validation-00001-of-00002").rename(copy / "validation-00001-of-00003")
    problems = verify(copy, ["validation"], progress=False)
    assert "validation-00001-of-00002: missing" in problems
    assert "validation-00001-of-00003: not in manifest.json" in problems


def test_label_outside_the_classes(copy):
    # One class fewer in labels.txt: the last class's records are out of range.
    lines = (copy / "labels.txt").read_text().splitlines(keepends=True)
    (copy / "labels.txt").write_text("".join(lines[:-1]))
    problems = verify(copy, ["validation"], progress=False)
    assert any("label 9 outside [0, 9)" in p for p in problems), problems


def test_tfds_metadata_that_no_longer_matches_is_reported(copy):
    info = json.loads((copy / "dataset_info.json").read_text())
    info["splits"][0]["shardLengths"][0] = "1"
    (copy / "dataset_info.json").write_text(json.dumps(info))
    (copy / "image-class-label.labels.txt").unlink()
    problems = verify(copy, ["test"], progress=False)
    assert problems == [
        f"image-class-label.labels.txt: missing; TensorFlow Datasets would not read these "
        f"shards as manifest.json and labels.txt describe them; rewrite it with `python -m "
        f"tfrecords_tools merge {copy}`",
        f"dataset_info.json: differs; TensorFlow Datasets would not read these shards as "
        f"manifest.json and labels.txt describe them; rewrite it with `python -m "
        f"tfrecords_tools merge {copy}`"]


def test_an_uploaded_copy_verifies_by_url_and_a_changed_shard_is_named(converted_shards):
    with fresh_dir() as bucket:
        storage.upload_tree(converted_shards, bucket)
        assert verify(str(bucket), processes=2, progress=False) == []
        shard = bucket / "validation-00001-of-00002"
        shard.write_bytes(shard.read_bytes()[:-1])
        problems = verify(str(bucket), ["validation"], progress=False)
        assert ("validation-00001-of-00002: sha256 differs from manifest.json (the file was "
                "changed)") in problems
