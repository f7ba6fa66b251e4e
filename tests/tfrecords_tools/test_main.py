import json

import pytest

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


def test_errors_name_the_culprit_and_exit_2(sample_archives, tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert "absent: no such directory of ILSVRC archives" in capsys.readouterr().err
    assert main(["convert", str(sample_archives.directory), str(tmp_path / "out"),
                 "--splits", "validation", "--validation-shards", "51"]) == 2
    assert "--validation-shards 51" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "--size", "0"])


def test_merge_reports_unfinished_splits(tmp_path, capsys):
    assert main(["merge", str(tmp_path), "--splits", "train"]) == 2
    assert "no conversion of train was started here" in capsys.readouterr().err
