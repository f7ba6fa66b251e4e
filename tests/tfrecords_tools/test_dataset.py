"""`DatasetInfo`: a shard directory read once, however many consumers look at it."""

from __future__ import annotations

import json

import pytest

from tfrecords_tools import dataset, schema
from tfrecords_tools.dataset import DatasetInfo


def test_it_reads_what_the_converter_wrote(converted_shards):
    info = DatasetInfo(converted_shards)
    assert list(info.classes) == schema.read_labels(converted_shards / schema.LABELS)
    assert info.label_offset == 0
    manifest = json.loads((converted_shards / schema.MANIFEST).read_text())
    for split in ("train", "validation", "test"):
        assert info.shards(split) == tuple(sorted(converted_shards.glob(f"{split}-*")))
        assert info.records(split) == manifest["splits"][split]["records"]
    assert info.stats.mean_image is not None
    assert DatasetInfo.of(info) is info


def count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_each_file_is_read_once_whatever_is_asked(converted_shards, monkeypatch):
    labels = count_calls(monkeypatch, schema, "read_labels")
    manifests = count_calls(monkeypatch, schema, "read_manifest")
    stats_files = count_calls(monkeypatch, dataset, "load_stats")
    info = DatasetInfo(converted_shards)
    for _ in range(3):
        info.classes, info.label_offset, info.stats  # noqa: B018
        info.records("train"), info.records("validation"), info.shards("test")
    assert (len(labels), len(manifests), len(stats_files)) == (1, 1, 1)


def test_shards_counted_when_the_manifest_has_no_count(converted_shards, tmp_path):
    for shard in converted_shards.glob("validation-*"):
        (tmp_path / shard.name).write_bytes(shard.read_bytes())
    manifest = json.loads((converted_shards / schema.MANIFEST).read_text())
    expected = manifest["splits"]["validation"]["records"]
    info = DatasetInfo(tmp_path)  # no manifest: a directory of shards alone
    assert info.manifest is None and info.classes is None and info.label_offset == 0
    assert info.records("validation") == expected


def test_missing_things_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'} does not exist"):
        DatasetInfo(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no validation shards"):
        DatasetInfo(tmp_path).shards("validation")
    (tmp_path / schema.MANIFEST).write_text(json.dumps({"label_offset": 7}))
    with pytest.raises(ValueError, match=r"manifest.json: label_offset 7, expected one of"):
        DatasetInfo(tmp_path).label_offset  # noqa: B018


def test_the_converters_output_is_read_by_its_manifest_not_its_tfds_metadata(converted_shards):
    # The converter describes its shards to TFDS too; they are still read as ours.
    assert (converted_shards / "dataset_info.json").is_file()
    info = DatasetInfo(converted_shards)
    assert info.prepared is None and info.keys == schema.KEYS
    assert info.labels_path == converted_shards / schema.LABELS
