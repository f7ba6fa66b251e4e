"""`tfrecords_tools.base.options`: a frozen dataclass's fields as flags, and back."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tfrecords_tools.base.options import add_arguments, check, from_args, option


@dataclasses.dataclass(frozen=True)
class Options:
    batch_size: int = option(128, "images per step", group="training", at_least=1)
    momentum: float = option(0.9, "of SGD", group="training", at_least=0, below=1)
    mode: str | None = option(None, "how", choices=("fast", "slow"))
    shuffle: bool = option(True, "shuffle the input")
    devices: tuple[str, ...] | None = option(None, "where", metavar="DEVICE")
    jobs: int | None = option(None, "processes", names=("-j", "--jobs"))

    def __post_init__(self):
        check(self, ValueError)


def parser_for(**keywords) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    add_arguments(parser, Options, **keywords)
    return parser


def test_no_flags_give_the_defaults_and_help_shows_them():
    parser = parser_for()
    assert from_args(Options, parser.parse_args([])) == Options()
    text = " ".join(parser.format_help().split())
    assert "--batch-size BATCH_SIZE images per step (default: 128)" in text
    assert "--shuffle, --no-shuffle shuffle the input (default: on)" in text
    assert "training:" in text  # the field's group
    assert "-j JOBS, --jobs JOBS processes" in text


def test_flags_set_the_fields():
    args = parser_for().parse_args(["--batch-size", "32", "--mode", "slow", "--no-shuffle",
                                    "--devices", "/CPU:0", "/CPU:1", "-j", "3"])
    assert from_args(Options, args) == Options(batch_size=32, mode="slow", shuffle=False,
                                               devices=("/CPU:0", "/CPU:1"), jobs=3)


def test_choices_and_ranges_are_refused_naming_the_field(capsys):
    with pytest.raises(SystemExit):
        parser_for().parse_args(["--mode", "medium"])
    assert "invalid choice: 'medium'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^batch_size must be at least 1, got 0$"):
        Options(batch_size=0)
    with pytest.raises(ValueError, match=r"^momentum must be at least 0 and less than 1, "
                                         r"got 1.5$"):
        from_args(Options, parser_for().parse_args(["--momentum", "1.5"]))
    with pytest.raises(ValueError, match=r"^mode must be one of \('fast', 'slow'\), got 'x'$"):
        Options(mode="x")


def test_another_spelling_a_subset_and_flag_booleans():
    parser = parser_for(fields=("batch_size", "shuffle"), spelling="--{}".format,
                        boolean={"type": lambda text: text == "true", "nargs": "?",
                                 "const": True})
    args = parser.parse_args(["--batch_size", "8", "--shuffle=false"])
    assert from_args(Options, args) == Options(batch_size=8, shuffle=False)
    assert from_args(Options, parser.parse_args(["--shuffle"])).shuffle is True
    assert "(default: true)" in parser.format_help()
    assert not hasattr(args, "mode")
