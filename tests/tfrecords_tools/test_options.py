"""`ConvertOptions`: each converter default written once, read by `convert` and by the
`convert` command's flags (and their --help)."""

from __future__ import annotations

import dataclasses

import pytest

from tfrecords_tools.__main__ import build_parser
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.base.options import flag_name, from_args
from tfrecords_tools.convert import convert
from tfrecords_tools.options import ConvertOptions


def parse(*flags: str) -> ConvertOptions:
    return from_args(ConvertOptions, build_parser().parse_args(["convert", "in", "out",
                                                                *flags]))


def test_no_flags_give_the_default_options_and_help_shows_each():
    assert parse() == ConvertOptions()
    convert_parser = build_parser()._subparsers._group_actions[0].choices["convert"]
    text = " ".join(convert_parser.format_help().split())
    for field in dataclasses.fields(ConvertOptions):
        names = field.metadata["flag"].get("names", (flag_name(field.name),))
        assert names[-1] in text, field.name
        if field.default is not None and not isinstance(field.default, bool):
            assert f"(default: {field.default})" in text, field.name
    # The paper's images: shorter side 256, the central square [paper §2].
    assert (ConvertOptions().size, ConvertOptions().crop) == (256, True)


def test_flags_set_the_options():
    assert parse("--splits", "train", "validation", "--train-shards", "8", "--size", "32",
                 "--no-crop", "--quality", "95", "--seed", "3", "--label-offset", "1",
                 "--allow-incomplete", "-j", "2", "--checkpoint-seconds", "5",
                 "--num-workers", "4", "--worker-index", "3") == ConvertOptions(
        splits=("train", "validation"), train_shards=8, size=32, crop=False, quality=95,
        seed=3, label_offset=1, allow_incomplete=True, processes=2, checkpoint_seconds=5.0,
        num_workers=4, worker_index=3)


@pytest.mark.parametrize("fields, message", [
    (dict(train_shards=0), "--train-shards must be at least 1, got 0"),
    (dict(quality=101), "--quality must be at least 1 and at most 100, got 101"),
    (dict(label_offset=2), r"--label-offset must be one of \(0, 1\), got 2"),
    (dict(num_workers=2, worker_index=2), r"--worker-index 2 must be in \[0, 2\)"),
    (dict(splits=("train", "dev")), "--splits train dev: choose from train, validation, test"),
])
def test_values_out_of_range_name_their_flag(fields, message):
    with pytest.raises(ArgumentError, match=message):
        ConvertOptions(**fields)


def test_convert_takes_options_or_their_fields(tmp_path):
    with pytest.raises(TypeError, match="options or their fields, not both"):
        convert(tmp_path / "out", tmp_path, ConvertOptions(), size=32)
    with pytest.raises(TypeError, match="unexpected keyword argument 'image_size'"):
        convert(tmp_path / "out", tmp_path, image_size=32)
    assert not (tmp_path / "out").exists()
