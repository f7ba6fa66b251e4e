import json

import pytest

from tfrecords_tools import schema
from tfrecords_tools.__main__ import main


def test_convert_verify_stats_from_the_command_line(sample_archives, tmp_path, capsys):
    assert main(["convert", str(sample_archives.directory), str(tmp_path), "--splits",
                 "validation", "--validation-shards", "3", "--size", "40", "--no-crop",
                 "-j", "1", "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "validation" in summary and "manifest written for: validation" in summary
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["splits"]["validation"]["arguments"]["crop"] is False
    assert len(manifest["splits"]["validation"]["shards"]) == 3
    assert main(["verify", str(tmp_path), "--quiet"]) == 0
    assert "all shards verified" in capsys.readouterr().out


def test_errors_name_the_culprit_and_exit_1(sample_archives, tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent"), str(tmp_path / "out")]) == 1
    assert "absent: no such archive, directory or image folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(sample_archives.directory), str(tmp_path / "out"),
                 "--splits", "validation", "--validation-shards", "51"]) == 1
    assert "--validation-shards 51" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "--size", "0"])


def test_merge_reports_unfinished_splits(tmp_path, capsys):
    assert main(["merge", str(tmp_path), "--splits", "train"]) == 1
    assert "no conversion of train was started here" in capsys.readouterr().err


def test_shard_counts_default_from_the_image_count(sample_archives, tmp_path, capsys):
    assert main(["convert", str(sample_archives.directory), str(tmp_path), "--splits",
                 "validation", "--size", "40", "-j", "1", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    images = manifest["splits"]["validation"]["records"]
    assert images < 256  # the sample's 50 images: one shard, not ILSVRC's 128
    assert len(manifest["splits"]["validation"]["shards"]) == 1
    assert [schema.default_num_shards(split, count) for split, count in (
        ("train", 1_281_167), ("validation", 50_000), ("test", 100_000), ("train", 5000))] \
        == [1024, 128, 128, 19]


def test_stats_and_merge_on_an_empty_directory_say_why(tmp_path, capsys):
    assert main(["stats", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path}: no training shards " \
                                      f"(train-?????-of-?????)\n"
    assert main(["merge", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}: no conversion was started here") and \
        err.count("\n") == 1
