"""`TrainingOptions`: each training default written once, read by `fit`, the `train`
command's flags (and their --help) and run.json."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

import pytest

import keras_alexnet
from keras_alexnet.commands import build_parser
from keras_alexnet.config import TrainingOptions
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED
from tfrecords_tools.base.options import from_args


def parse(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", "data", "run", *flags])


def test_no_flags_give_the_default_options():
    assert from_args(TrainingOptions, parse()) == TrainingOptions()


def test_paper_defaults():
    # [paper §5]: batch 128, momentum 0.9, decay 0.0005, lr 0.01, three reductions,
    # ~90 epochs; [paper §4.1]: lighting alphas N(0, 0.1).
    options = TrainingOptions()
    assert (options.batch_size, options.momentum, options.weight_decay,
            options.initial_learning_rate, options.max_lr_reductions, options.epochs,
            options.lighting_stddev) == (128, 0.9, 0.0005, 0.01, 3, 90, 0.1)
    # Fine-tuning: Caffe's finetune_flickr_style solver, base_lr 0.001, unless given.
    assert options.replace(init_from="run").initial_learning_rate == 0.001
    assert options.replace(init_from="run", learning_rate=0.02).initial_learning_rate == 0.02


def test_every_option_has_a_flag_whose_help_shows_its_default(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(TrainingOptions):
        assert f"--{field.name.replace('_', '-')}" in text
        if field.default is not None and not isinstance(field.default, bool):
            assert f"(default: {field.default})" in text, field.name


def test_flags_set_the_options():
    options = from_args(TrainingOptions, parse(
        "--epochs", "7", "--batch-size", "32", "--learning-rate", "0.02", "--mean", "pixel",
        "--no-deterministic", "--xla", "--devices", "/CPU:0", "/CPU:1", "--no-tensorboard",
        "--keep-checkpoints", "0", "--backup-every", "10", "--lighting-stddev", "0"))
    assert options == TrainingOptions(
        epochs=7, batch_size=32, learning_rate=0.02, mean="pixel", deterministic=False,
        xla=True, devices=("/CPU:0", "/CPU:1"), tensorboard=False, keep_checkpoints=0,
        backup_every=10, lighting_stddev=0.0)


def test_a_value_out_of_range_is_refused_from_the_flags_too():
    with pytest.raises(ValueError, match="momentum must be at least 0 and less than 1"):
        from_args(TrainingOptions, parse("--momentum", "1.5"))


def test_fit_takes_the_options_as_keywords_and_refuses_unknown_ones(tmp_path):
    assert "options" in inspect.signature(keras_alexnet.fit).parameters
    with pytest.raises(TypeError, match=r"unknown training option.* learning_rat\b"):
        keras_alexnet.fit(tmp_path, tmp_path, learning_rat=0.1)


@pytest.mark.slow
def test_run_json_records_the_options_of_the_run(tmp_path):
    from tests.keras_alexnet.training_helpers import make_dataset

    data = make_dataset(tmp_path / "data", train_per_class=8, validation_per_class=2)
    options = TrainingOptions(epochs=1, steps_per_epoch=1, validation_steps=1, backup_every=0,
                              **{k: v for k, v in FIT_ARGS.items() if k != "verbose"})
    keras_alexnet.fit(data, tmp_path / "run", config=REDUCED, options=options, verbose=0)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["seed"] == options.seed
    # xla as fit settled it: a one-step run compiles no XLA on any machine.
    assert TrainingOptions(**{**recorded["options"], "devices": None}) == \
        options.replace(xla=False)


def test_a_source_given_as_a_path_is_recorded_as_its_string(tmp_path):
    # fit(init_from=Path(...)) once failed writing run.json: a Path is not JSON.
    options = TrainingOptions(init_from=tmp_path / "source")
    assert json.loads(json.dumps(options.to_json()))["init_from"] == str(tmp_path / "source")
