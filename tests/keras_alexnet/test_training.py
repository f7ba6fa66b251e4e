"""keras_alexnet.fit: it learns, survives kill -9, stops on NaN, refuses bad input."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.commands import main
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, make_dataset

ROOT = Path(__file__).resolve().parents[2]
LOG_COLUMNS = {"epoch", "loss", "top1", "top5", "learning_rate", "val_loss", "val_top1",
               "val_top5"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four classes: 256 training and 64 held-out validation images."""
    return make_dataset(tmp_path_factory.mktemp("fit") / "data")


def log_rows(model_dir):
    with open(Path(model_dir) / "training_log.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_the_reduced_model_learns_far_above_chance(dataset, tmp_path):
    history = keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=5, batch_size=32,
                                learning_rate=0.005, seed=1, verbose=0)
    assert len(history.history["loss"]) == 5
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = keras_alexnet.evaluate(tmp_path, dataset, verbose=False)
    # 64 held-out images, chance 1/4: P(at least 48 right by luck) < 1e-14.
    assert result["images"] == 64
    assert result["ten_crop"]["top1_error"] <= 0.25
    assert result["center"]["top1_error"] <= 0.25
    rows = log_rows(tmp_path)
    assert set(rows[0]) >= LOG_COLUMNS
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3, 4]
    assert [epoch for epoch, _ in checkpoints.list_checkpoints(tmp_path)] == [1, 2, 3, 4, 5]
    assert result["checkpoint"] == str(checkpoints.checkpoint_path(tmp_path, 5))


def start_worker(dataset, model_dir, weights, epochs):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.keras_alexnet.training_worker", str(dataset),
         str(model_dir), str(weights), "--epochs", str(epochs), "--steps-per-epoch", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_run_killed_with_sigkill_resumes_as_if_never_stopped(dataset, tmp_path):
    killed = tmp_path / "killed"
    worker = start_worker(dataset, killed, tmp_path / "unused.npz", epochs=50)
    deadline = time.monotonic() + 120
    while checkpoints.latest_checkpoint(killed) is None or \
            checkpoints.checkpoint_epoch(checkpoints.latest_checkpoint(killed)) < 2:
        assert worker.poll() is None, worker.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no second checkpoint within 120 s"
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    last = checkpoints.latest_checkpoint(killed)
    done = checkpoints.checkpoint_epoch(last)
    assert 2 <= done < 4
    saved = checkpoints.load_model(last)
    saved_lr = float(saved.optimizer.learning_rate.numpy())
    assert int(saved.optimizer.iterations.numpy()) == 3 * done

    resumed = start_worker(dataset, killed, tmp_path / "resumed.npz", epochs=4)
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert f"Epoch {done + 1}/4" in output and "Epoch 1/4" not in output

    # The same run without the kill, in this process.
    keras.utils.set_random_seed(0)
    reference = keras_alexnet.fit(dataset, tmp_path / "reference", config=REDUCED, epochs=4,
                                  steps_per_epoch=3, **FIT_ARGS)
    final = np.load(tmp_path / "resumed.npz")
    for i, weight in enumerate(reference.model.get_weights()):
        np.testing.assert_allclose(final[f"final_{i}"], weight, rtol=1e-5, atol=1e-7)

    rows, expected = log_rows(killed), log_rows(tmp_path / "reference")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    # The divided learning rate survived: the resumed epoch ran at the checkpoint's rate.
    assert float(rows[done]["learning_rate"]) == pytest.approx(saved_lr)
    assert saved_lr == pytest.approx(FIT_ARGS["learning_rate"] / 10)
    for row, reference_row in zip(rows, expected, strict=True):
        assert float(row["learning_rate"]) == pytest.approx(float(reference_row["learning_rate"]))
        assert float(row["loss"]) == pytest.approx(float(reference_row["loss"]), rel=1e-4)
    final_model = checkpoints.load_model(killed)
    assert int(final_model.optimizer.iterations.numpy()) == 12


def test_nan_loss_stops_with_a_clear_message_and_no_checkpoint(dataset, tmp_path):
    with pytest.raises(FloatingPointError, match=r"NaN or infinite at epoch 1, batch \d+ "
                                                 r"\(learning rate 1e\+06\); the last good "
                                                 r"checkpoint is none; try a lower"):
        keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=2, steps_per_epoch=3,
                          **{**FIT_ARGS, "learning_rate": 1e6})
    assert checkpoints.latest_checkpoint(tmp_path) is None


def test_an_incompatible_checkpoint_is_refused_naming_it(dataset, tmp_path):
    keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=1, steps_per_epoch=1,
                      validation_steps=1, **FIT_ARGS)
    checkpoint = checkpoints.latest_checkpoint(tmp_path)
    three_classes = make_dataset(tmp_path / "three", num_classes=3, train_per_class=6,
                                 validation_per_class=2)
    with pytest.raises(ValueError, match=f"{checkpoint}: the checkpoint classifies 4 classes "
                                         f"but the data has 3"):
        keras_alexnet.fit(three_classes, tmp_path, epochs=2, **FIT_ARGS)
    wider = REDUCED.__class__(**{**REDUCED.__dict__, "width": 0.25})
    with pytest.raises(ValueError, match=f"{checkpoint}: the checkpoint has .* parameters"):
        keras_alexnet.fit(dataset, tmp_path, config=wider, epochs=2, **FIT_ARGS)
    assert checkpoints.latest_checkpoint(tmp_path) == checkpoint  # nothing lost

    corrupt = checkpoints.checkpoint_path(tmp_path / "corrupt", 3)
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=f"{corrupt}: cannot load the checkpoint"):
        keras_alexnet.fit(dataset, tmp_path / "corrupt", epochs=4, **FIT_ARGS)


def test_the_train_command_trains_and_reports_bad_input_without_a_traceback(dataset, tmp_path,
                                                                            capsys):
    assert main(["train", str(dataset), str(tmp_path / "model"), "--reduced",
                 "--init-stddev", "0.05", "--epochs", "1", "--steps-per-epoch", "2",
                 "--validation-steps", "1", "--batch-size", "16", "--no-tensorboard"]) == 0
    model = checkpoints.load_model(tmp_path / "model")
    assert model.output_shape == (None, 4) and model.input_shape == (None, 64, 64, 3)
    assert int(model.optimizer.iterations.numpy()) == 2

    assert main(["train", str(tmp_path / "absent"), str(tmp_path / "model"), "--reduced"]) == 1
    assert f"error: data directory {tmp_path / 'absent'} does not exist" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--strategy", "--mixed-precision", "--xla",
                   "--mean", "--seed"):
        assert option in help_text


def test_mixed_precision_and_xla_switches(dataset, tmp_path):
    history = keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=1, steps_per_epoch=2,
                                validation_steps=1, mixed_precision="mixed_bfloat16", xla=True,
                                **FIT_ARGS)
    assert np.isfinite(history.history["loss"][0])
    assert history.model.jit_compile is True
    assert keras.mixed_precision.dtype_policy().name == "float32"  # left as it was
    model = checkpoints.load_model(tmp_path)
    assert model.get_layer("tower_b_fc6").layer.compute_dtype == "bfloat16"
    assert model.get_layer("tower_b_fc6").layer.variable_dtype == "float32"
    assert model.output.dtype == "float32"


def test_the_learning_rate_schedule_divides_at_plateaus_and_replays_from_the_log():
    from keras_alexnet.training import DivideLearningRateOnPlateau

    def model():
        net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        net.compile(keras_alexnet.PaperSGD(0.01), "mse")
        return net

    accuracies = [0.1, 0.3, 0.3, 0.2, 0.4, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    schedule = DivideLearningRateOnPlateau(0.01, patience=2)
    schedule.set_model(model())
    schedule.on_train_begin()
    rows = []
    for epoch, accuracy in enumerate(accuracies):
        logs = {"val_top1": accuracy}
        schedule.on_epoch_end(epoch, logs)
        rows.append({"learning_rate": str(logs["learning_rate"]), "val_top1": str(accuracy)})
    rates = [float(row["learning_rate"]) for row in rows]
    # Divided after two epochs without a better accuracy at the current rate, and only
    # three times: 0.01 (epochs 0-3), 0.001 (4-6), 1e-4 (7-9), 1e-5 from then on.
    assert rates == pytest.approx([0.01] * 4 + [0.001] * 3 + [1e-4] * 3 + [1e-5] * 4)

    # A run resumed after epoch 8 (rate 1e-4, one epoch without gain) divides after one more.
    resumed = DivideLearningRateOnPlateau(0.01, patience=2, trained=rows[:9])
    resumed.set_model(model())
    resumed.model.optimizer.learning_rate = 1e-4
    resumed.on_train_begin()
    resumed.on_epoch_end(9, {"val_top1": 0.5})
    assert float(resumed.model.optimizer.learning_rate.numpy()) == pytest.approx(1e-5)
