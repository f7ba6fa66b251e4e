"""keras_alexnet.checkpoints: which checkpoint of a training run evaluate, export and
features use (the best epoch's, kept), and the line that says so."""

import csv

import pytest

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.commands import chosen_checkpoints
from keras_alexnet.errors import CheckpointError
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, make_dataset


def write_run(model_dir, rows, kept):
    """A model directory with a training log of `rows` and empty files for the
    checkpoints of the epochs `kept` (choosing one reads names, not contents)."""
    (model_dir / checkpoints.CHECKPOINT_DIR).mkdir(parents=True)
    with open(model_dir / checkpoints.LOG_NAME, "w", newline="") as file:
        writer = csv.DictWriter(file, ["epoch", *rows[0]])
        writer.writeheader()
        writer.writerows({"epoch": epoch, **row} for epoch, row in enumerate(rows))
    for epoch in kept:
        checkpoints.checkpoint_path(model_dir, epoch).write_bytes(b"")
    return model_dir


VALIDATED = [{"top1": "0.4", "val_top1": "0.5"}, {"top1": "0.6", "val_top1": "0.8"},
             {"top1": "0.7", "val_top1": "0.8"}, {"top1": "0.9", "val_top1": "0.6"}]


def test_the_best_epoch_is_the_earliest_of_the_best_validation_accuracies(tmp_path):
    best = checkpoints.best_epoch(write_run(tmp_path, VALIDATED, kept=[2, 4]))
    assert (best.epoch, best.metric, best.accuracy, best.epochs) == (2, "val_top1", 0.8, 4)
    assert str(best) == "the best validation top-1 error, 0.2000 at epoch 2 of 4"


def test_without_a_validation_split_the_training_accuracy_decides(tmp_path):
    rows = [{"top1": top1, "val_top1": "NA"} for top1 in ("0.3", "0.9", "0.5")]
    best = checkpoints.best_epoch(write_run(tmp_path, rows, kept=[3]))
    assert (best.epoch, best.metric) == (2, "top1")
    assert str(best).startswith("the best training top-1 error, 0.1000 at epoch 2")


def test_a_run_directory_means_its_best_kept_checkpoint_unless_told(tmp_path):
    run = write_run(tmp_path / "run", VALIDATED, kept=[2, 3, 4])
    assert checkpoints.resolve(run) == checkpoints.checkpoint_path(run, 2)
    assert checkpoints.resolve(run, "latest") == checkpoints.checkpoint_path(run, 4)
    assert checkpoints.resolve(run, "3") == checkpoints.checkpoint_path(run, 3)
    with pytest.raises(CheckpointError, match=r"no checkpoint of epoch '1'; kept: best, "
                                              r"latest, epochs 2, 3, 4"):
        checkpoints.resolve(run, "1")
    assert checkpoints.describe(run) == (
        f"checkpoint {checkpoints.checkpoint_path(run, 2)} (the best validation top-1 "
        f"error, 0.2000 at epoch 2 of 4; the latest is epoch 4)")
    assert checkpoints.describe(run, "latest").endswith("epoch-0004.keras (the latest)")
    # A run whose best epoch was deleted (written before the best was kept): the latest.
    old = write_run(tmp_path / "old", VALIDATED, kept=[3, 4])
    assert checkpoints.resolve(old) == checkpoints.checkpoint_path(old, 4)
    assert checkpoints.describe(old).endswith("(the latest; the best epoch's is not kept)")
    # A .keras file is itself, whatever --epoch says.
    assert checkpoints.resolve(checkpoints.checkpoint_path(run, 3), "latest") == \
        checkpoints.checkpoint_path(run, 3)


def test_each_command_says_which_checkpoint_it_used(tmp_path, capsys):
    run = write_run(tmp_path / "run", VALIDATED, kept=[2, 4])
    assert chosen_checkpoints([str(run)], "best") == [
        str(checkpoints.checkpoint_path(run, 2))]
    assert capsys.readouterr().err == f"{run}: {checkpoints.describe(run)}\n"


def test_training_keeps_the_best_epoch_besides_the_newest(tmp_path):
    data = make_dataset(tmp_path / "data", num_classes=4, train_per_class=8,
                        validation_per_class=4)
    keras_alexnet.fit(data, tmp_path / "run", config=REDUCED, **{
        **FIT_ARGS, "epochs": 4, "steps_per_epoch": 2, "keep_checkpoints": 1,
        "backup_every": 0, "verbose": 0})
    rows = checkpoints.read_log(tmp_path / "run")
    accuracies = [float(row["val_top1"]) for row in rows]
    best = accuracies.index(max(accuracies)) + 1  # the earliest of the best
    kept = [epoch for epoch, _ in checkpoints.list_checkpoints(tmp_path / "run")]
    assert kept == sorted({best, 4})
    assert checkpoints.resolve(tmp_path / "run") == \
        checkpoints.checkpoint_path(tmp_path / "run", best)
