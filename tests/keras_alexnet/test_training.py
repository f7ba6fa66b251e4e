"""keras_alexnet.fit: it learns, resumes bit for bit from any step, reproduces a seed, runs
the user's callbacks, reports itself, stops on NaN and refuses bad input."""

import csv
import dataclasses
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_alexnet
from keras_alexnet import checkpoints, hardware, training
from keras_alexnet.commands import main
from keras_alexnet.config import TrainingOptions
from tests.fakes import write_cpuinfo
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, make_dataset

ROOT = Path(__file__).resolve().parents[2]
LOG_COLUMNS = {"epoch", "loss", "top1", "top5", "learning_rate", "val_loss", "val_top1",
               "val_top5"}
#: The resume tests' run: 3 epochs of 4 steps; backups every 3 steps fall inside epochs.
EPOCHS, STEPS, BACKUP_EVERY = 3, 4, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four classes: 256 training and 64 held-out validation images."""
    return make_dataset(tmp_path_factory.mktemp("fit") / "data")


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    """The resume tests' run, never stopped: (model_dir, final weights)."""
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    history = keras_alexnet.fit(dataset, model_dir, config=REDUCED, epochs=EPOCHS,
                                steps_per_epoch=STEPS, backup_every=BACKUP_EVERY, **FIT_ARGS)
    return model_dir, history.model.get_weights()


def log_rows(model_dir):
    with open(Path(model_dir) / "training_log.csv", newline="") as file:
        return list(csv.DictReader(file))


def assert_bit_identical(weights, reference):
    assert len(weights) == len(reference)
    for i, (weight, expected) in enumerate(zip(weights, reference, strict=True)):
        assert np.array_equal(weight, expected), f"weight {i} differs by " \
            f"{np.max(np.abs(weight - expected))}"


class StopAtStep(keras.callbacks.Callback):
    """Stops training after the step that brings the optimizer to `step` iterations."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            self.model.stop_training = True


class CountSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


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
    # evaluate takes the best epoch's checkpoint: the earliest of the best validation.
    accuracies = [float(row["val_top1"]) for row in rows]
    best = accuracies.index(max(accuracies)) + 1
    assert result["checkpoint"] == str(checkpoints.checkpoint_path(tmp_path, best))


def run_worker(dataset, model_dir, weights, *options):
    return subprocess.run(
        [sys.executable, "-m", "tests.keras_alexnet.training_worker", str(dataset),
         str(model_dir), str(weights), "--epochs", str(EPOCHS), "--steps-per-epoch",
         str(STEPS), "--backup-every", str(BACKUP_EVERY), *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)


@pytest.mark.slow
def test_a_run_killed_at_a_random_step_resumes_bit_identical(dataset, uninterrupted,
                                                             tmp_path):
    # A step inside an epoch, drawn anew each run (printed on failure).
    kill_at = random.choice([n for n in range(1, EPOCHS * STEPS) if n % STEPS])
    killed = run_worker(dataset, tmp_path, tmp_path / "unused.npz",
                        "--kill-at-step", str(kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    # What the kill left: the newest of the epoch checkpoints and step backups.
    saved_at = max(kill_at // STEPS * STEPS, kill_at // BACKUP_EVERY * BACKUP_EVERY)
    assert not list((tmp_path / "checkpoints").glob(".partial-*"))

    resumed = run_worker(dataset, tmp_path, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    final = np.load(tmp_path / "resumed.npz")
    assert int(final["steps"]) == EPOCHS * STEPS - saved_at, f"killed at step {kill_at}"
    if saved_at % STEPS:
        assert f"at epoch {saved_at // STEPS + 1}, step {saved_at % STEPS + 1} of {STEPS}" \
            in resumed.stdout
    count = sum(name.startswith("final_") for name in final.files)
    reference_dir, reference = uninterrupted
    assert_bit_identical([final[f"final_{i}"] for i in range(count)], reference)
    # The log too: the resumed epoch's loss and accuracies are those of the whole epoch.
    assert log_rows(tmp_path) == log_rows(reference_dir)
    assert not checkpoints.backup_path(tmp_path).exists()  # older than the last epoch's
    model = checkpoints.load_model(tmp_path, which="latest")
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS
    # patience 1, min_delta 1: the rate was divided after epochs 2 and 3.
    rates = [float(row["learning_rate"]) for row in log_rows(tmp_path)]
    assert rates == pytest.approx([0.005, 0.005, 0.0005])


@pytest.mark.slow
def test_a_callback_that_stops_mid_epoch_leaves_a_backup_the_rerun_continues(
        dataset, uninterrupted, tmp_path):
    keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=EPOCHS, steps_per_epoch=STEPS,
                      backup_every=0, callbacks=[StopAtStep(STEPS + 2)], **FIT_ARGS)
    backup = checkpoints.backup_path(tmp_path)
    assert checkpoints.read_metadata(backup)["epoch"] == 1
    assert checkpoints.read_metadata(backup)["step"] == 2
    assert [e for e, _ in checkpoints.list_checkpoints(tmp_path)] == [1]  # not 2: cut short

    counter = CountSteps()
    history = keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=EPOCHS,
                                steps_per_epoch=STEPS, backup_every=0, callbacks=[counter],
                                **FIT_ARGS)
    assert counter.steps == EPOCHS * STEPS - (STEPS + 2)
    assert history.epoch == [1, 2]
    reference_dir, reference = uninterrupted
    assert_bit_identical(history.model.get_weights(), reference)
    assert log_rows(tmp_path) == log_rows(reference_dir)


@pytest.mark.slow
def test_ctrl_c_during_validation_resumes_with_the_epoch_end_still_to_do(
        dataset, uninterrupted, tmp_path):
    class InterruptValidation(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_test_begin(self, logs=None):
            if self.epoch == 1:
                raise KeyboardInterrupt  # as Ctrl-C during epoch 2's validation

    with pytest.raises(KeyboardInterrupt, match=f"interrupted at epoch 2, step {STEPS} of "
                                                f"{STEPS}; the training state is in "):
        keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=EPOCHS,
                          steps_per_epoch=STEPS, backup_every=0,
                          callbacks=[InterruptValidation()], **FIT_ARGS)
    assert checkpoints.read_metadata(checkpoints.backup_path(tmp_path))["step"] == STEPS

    counter = CountSteps()
    history = keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=EPOCHS,
                                steps_per_epoch=STEPS, callbacks=[counter], **FIT_ARGS)
    assert counter.steps == STEPS  # only epoch 3: epoch 2 needed its validation alone
    reference_dir, reference = uninterrupted
    assert_bit_identical(history.model.get_weights(), reference)
    assert log_rows(tmp_path) == log_rows(reference_dir)


def test_user_callbacks_run_beside_the_built_in_ones_and_early_stopping_checkpoints(
        dataset, tmp_path):
    events = []

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            events.append((epoch, sorted(logs)))

        def on_train_end(self, logs=None):
            events.append("end")

    stop = keras.callbacks.EarlyStopping("val_top1", patience=0, min_delta=1.0)
    keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=10, steps_per_epoch=2,
                      validation_steps=1, callbacks=[Recorder(), stop], **FIT_ARGS)
    # EarlyStopping (no gain of 1.0 is possible) ended the run after its second epoch,
    # with that epoch's checkpoint; the built-in learning_rate column reached the user.
    assert events[0] == "begin" and events[-1] == "end" and len(events) == 4
    assert [epoch for epoch, _ in events[1:3]] == [0, 1]
    assert set(events[1][1]) >= LOG_COLUMNS - {"epoch"}
    assert [e for e, _ in checkpoints.list_checkpoints(tmp_path)] == [1, 2]


@pytest.mark.slow
def test_a_seed_reproduces_a_run_bit_for_bit_and_a_drawn_seed_is_recorded(dataset, tmp_path,
                                                                          capsys):
    args = {**FIT_ARGS, "seed": 3}
    first = keras_alexnet.fit(dataset, tmp_path / "a", config=REDUCED, epochs=1,
                              steps_per_epoch=3, **args).model.get_weights()
    second = keras_alexnet.fit(dataset, tmp_path / "b", config=REDUCED, epochs=1,
                               steps_per_epoch=3, **args).model.get_weights()
    assert_bit_identical(second, first)
    other = keras_alexnet.fit(dataset, tmp_path / "c", config=REDUCED, epochs=1,
                              steps_per_epoch=3, **{**args, "seed": 4}).model.get_weights()
    assert not np.array_equal(other[0], first[0])
    assert json.loads((tmp_path / "a" / "run.json").read_text())["seed"] == 3

    capsys.readouterr()
    drawn = keras_alexnet.fit(dataset, tmp_path / "d", config=REDUCED, epochs=1,
                              steps_per_epoch=3, **{**args, "seed": None})
    seed = json.loads((tmp_path / "d" / "run.json").read_text())["seed"]
    assert f"seed {seed} (drawn; pass it to repeat this run)" in capsys.readouterr().out
    repeat = keras_alexnet.fit(dataset, tmp_path / "e", config=REDUCED, epochs=1,
                               steps_per_epoch=3, **{**args, "seed": seed})
    assert_bit_identical(repeat.model.get_weights(), drawn.model.get_weights())
    with pytest.raises(ValueError, match=f"seed 5 differs from the seed {seed} that "):
        keras_alexnet.fit(dataset, tmp_path / "d", config=REDUCED, epochs=2, steps_per_epoch=3,
                          **{**args, "seed": 5})


@pytest.mark.slow
def test_a_run_reports_itself_and_verbose_0_is_silent(dataset, tmp_path, capsys):
    keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=1, steps_per_epoch=3,
                      **FIT_ARGS)
    out = capsys.readouterr().out
    assert f"keras_alexnet.fit: {tmp_path}" in out
    assert "tower_a on /CPU:0, tower_b on /CPU:0" in out
    assert "256 training images, 64 validation, 4 classes" in out
    assert "1 epoch of 3 steps, batch 16 (global), seed 7, deterministic input" in out
    assert "a new model; backup every 1,000 steps" in out
    best = max(float(row["val_top1"]) for row in log_rows(tmp_path))
    assert (f"done; final checkpoint {checkpoints.checkpoint_path(tmp_path, 1)}; best "
            f"validation top-1 error {1 - best:.4f} (epoch 1)") in out

    keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=2, steps_per_epoch=3,
                      **FIT_ARGS)
    out = capsys.readouterr().out
    assert f"resumes {checkpoints.checkpoint_path(tmp_path, 1)} at epoch 2, step 1 of 3" in out
    keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=3, steps_per_epoch=3,
                      **{**FIT_ARGS, "verbose": 0})
    assert capsys.readouterr().out == ""


def test_without_a_validation_split_the_schedule_watches_the_training_accuracy(
        dataset, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for path in [*dataset.glob("train-*"), dataset / "labels.txt", dataset / "stats.json"]:
        shutil.copy(path, data_dir)
    history = keras_alexnet.fit(data_dir, tmp_path / "model", config=REDUCED, epochs=2,
                                steps_per_epoch=2, **FIT_ARGS)
    out = capsys.readouterr().out
    assert "256 training images, 0 validation, 4 classes" in out
    assert "; no validation split" in out
    assert "val_loss" not in history.history
    # patience 1, min_delta 1: top1 cannot improve by 1, so the rate was divided.
    assert float(history.model.optimizer.learning_rate.numpy()) == pytest.approx(0.0005)


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("learning_rate", 0.0, "learning_rate must be more than 0, got 0.0"),
    ("learning_rate", -1.0, "learning_rate must be more than 0"),
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("batch_size", 0, "batch_size must be at least 1"),
    ("batch_size", 257, "batch_size 257 is more than the 256 training images"),
    ("momentum", 1.0, "momentum must be at least 0 and less than 1, got 1.0"),
    ("backup_every", -1, "backup_every must be at least 0"),
    ("steps_per_epoch", 0, "steps_per_epoch must be at least 1"),
    ("mean", "median", "mean must be one of"),
])
def test_invalid_hyper_parameters_name_the_argument(dataset, tmp_path, argument, value,
                                                    message):
    with pytest.raises(ValueError, match=message):
        keras_alexnet.fit(dataset, tmp_path, config=REDUCED, **{**FIT_ARGS, argument: value})
    assert not checkpoints.list_checkpoints(tmp_path)


def test_nan_loss_stops_with_a_clear_message_and_no_checkpoint(dataset, tmp_path):
    with pytest.raises(FloatingPointError, match=r"NaN or infinite at epoch 1, batch \d+ "
                                                 r"\(learning rate 1e\+06\); the last good "
                                                 r"checkpoint is none; try a lower"):
        keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=2, steps_per_epoch=3,
                          **{**FIT_ARGS, "learning_rate": 1e6})
    assert checkpoints.latest_checkpoint(tmp_path) is None


def test_nan_loss_removes_the_backup_of_the_weights_that_gave_it(dataset, tmp_path):
    with pytest.raises(FloatingPointError) as error:
        # The paper's biases of 1: the loss becomes NaN within the first epoch.
        keras_alexnet.fit(dataset, tmp_path, config=dataclasses.replace(REDUCED, bias_init=1.0),
                          epochs=2, steps_per_epoch=4, backup_every=1,
                          **{**FIT_ARGS, "learning_rate": 1e6})
    failed = int(re.search(r"batch (\d+)", str(error.value)).group(1))
    backup = checkpoints.backup_path(tmp_path)
    if failed <= 2:  # the only backup was made by the step before the failing one
        assert not backup.exists()
    else:
        assert checkpoints.read_metadata(backup)["iterations"] == failed - 2
        assert f"the last good checkpoint is {backup}" in str(error.value)
        weights = checkpoints.load_model(backup).get_weights()
        assert all(np.isfinite(weight).all() for weight in weights)


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
    with pytest.raises(ValueError, match=re.escape(
            f"{checkpoint}: the checkpoint has filters per tower (conv1..conv5) "
            f"(6, 16, 24, 24, 16) but the config gives (12, 32, 48, 48, 32)")):
        keras_alexnet.fit(dataset, tmp_path, config=wider, epochs=2, **FIT_ARGS)
    assert checkpoints.latest_checkpoint(tmp_path) == checkpoint  # nothing lost

    corrupt = checkpoints.checkpoint_path(tmp_path / "corrupt", 3)
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=f"{corrupt}: cannot load the checkpoint"):
        keras_alexnet.fit(dataset, tmp_path / "corrupt", epochs=4, **FIT_ARGS)


def own_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ start-up log lines (the CLI test suite checks
    those) and the record-counting progress bars."""
    return [line for line in stderr.splitlines() if line.strip()
            and not re.match(r"[IWEF]\d{4} |WARNING: All log messages|\s*counting ", line)]


def train_command(dataset, model_dir, *options):
    return [sys.executable, "-m", "keras_alexnet", "train", str(dataset), str(model_dir),
            "--reduced", "--epochs", "2", "--steps-per-epoch", "200", "--batch-size", "16",
            "--validation-steps", "1", "--seed", "7", "--no-tensorboard", *options]


@pytest.mark.slow
@pytest.mark.parametrize(("sent", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_a_backup_and_exits_with_one_line(dataset, tmp_path, sent,
                                                                  status):
    process = subprocess.Popen(train_command(dataset, tmp_path, "--backup-every", "5"),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not checkpoints.backup_path(tmp_path).exists():  # well inside the first epoch
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no backup within 120 s"
        time.sleep(0.05)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr[-3000:]
    lines = own_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    metadata = checkpoints.read_metadata(checkpoints.backup_path(tmp_path))
    assert lines[0] == (f"interrupted at epoch 1, step {metadata['step']} of 200; the "
                        f"training state is in {checkpoints.backup_path(tmp_path)}; rerun the "
                        f"same command to resume")
    assert metadata["step"] >= 5 and metadata["epoch"] == 0
    assert not list((tmp_path / "checkpoints").glob(".partial-*"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a tmpfs")
def test_a_full_disk_is_one_line_naming_the_directory_and_leaves_no_partial_file(dataset,
                                                                                 tmp_path):
    # A private 1 MB tmpfs as model_dir: the log fits, a checkpoint (~2.4 MB) does not.
    model_dir = tmp_path / "small"
    model_dir.mkdir()
    train = " ".join(train_command(dataset, model_dir, "--epochs", "1",
                                   "--steps-per-epoch", "2"))
    script = (f"mount -t tmpfs -o size=1m tmpfs {model_dir} && {train}; "
              f"echo rc=$?; ls -a {model_dir}/checkpoints")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, text=True,
                            capture_output=True, timeout=180)
    if "mount" in result.stderr and "rc=" not in result.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert "rc=1" in result.stdout, result.stderr[-3000:]
    lines = own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"error: {model_dir}/checkpoints: no space left on the device to save "
                        rf"epoch-0001\.keras \(it needs about [\d,]+ bytes, [\d,]+ are free\); "
                        rf"free some space and rerun the same command to resume", lines[0])
    assert ".partial" not in result.stdout  # the listing of checkpoints/


def test_the_train_command_trains_and_reports_bad_input_without_a_traceback(dataset, tmp_path,
                                                                            capsys):
    assert main(["train", str(dataset), str(tmp_path / "model"), "--reduced",
                 "--init-stddev", "0.05", "--epochs", "1", "--steps-per-epoch", "2",
                 "--validation-steps", "1", "--batch-size", "16", "--no-tensorboard"]) == 0
    model = checkpoints.load_model(tmp_path / "model")
    assert model.output_shape == (None, 4) and model.input_shape == (None, 64, 64, 3)
    assert int(model.optimizer.iterations.numpy()) == 2

    assert main(["train", str(tmp_path / "absent"), str(tmp_path / "model2"), "--reduced"]) == 1
    # Said before TensorFlow loads (`check`), and nothing created.
    assert f"error: {tmp_path / 'absent'}: no such data directory; create it with `python " \
        f"-m tfrecords_tools convert`" in capsys.readouterr().err
    assert not (tmp_path / "model2").exists()
    assert main(["train", str(dataset), str(tmp_path / "other"), "--reduced",
                 "--learning-rate", "0"]) == 1
    assert "error: learning_rate must be more than 0, got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--strategy", "--mixed-precision", "--xla",
                   "--mean", "--seed", "--backup-every", "--no-deterministic"):
        assert option in help_text


def test_mixed_precision_switch(dataset, tmp_path):
    history = keras_alexnet.fit(dataset, tmp_path, config=REDUCED, epochs=1, steps_per_epoch=2,
                                validation_steps=1, mixed_precision="mixed_bfloat16",
                                **FIT_ARGS)
    assert np.isfinite(history.history["loss"][0])
    assert keras.mixed_precision.dtype_policy().name == "float32"  # left as it was
    model = checkpoints.load_model(tmp_path)
    assert model.get_layer("tower_b_fc6").layer.compute_dtype == "bfloat16"
    assert model.get_layer("tower_b_fc6").layer.variable_dtype == "float32"
    assert model.output.dtype == "float32"


#: A run long enough for XLA's compile time to be won back: 1,000 planned steps.
LONG_RUN = {"epochs": training.XLA_MIN_STEPS // STEPS, "steps_per_epoch": STEPS}


@pytest.mark.parametrize(("flags", "options", "xla", "reason"), [
    ("", LONG_RUN, True, "the default on a CPU without AVX-512, where its step is"),
    ("", {**LONG_RUN, "epochs": LONG_RUN["epochs"] - 1}, False,
     "the default for fewer than 1,000 steps"),
    ("avx512f avx512bw", LONG_RUN, False, "the default on an AVX-512 CPU"),
    (None, LONG_RUN, False, "the default on a CPU of unknown features"),
    ("", {**LONG_RUN, "devices": ("/CPU:0", "/CPU:0")}, False, "the default on GPUs and "
     "across devices"),
    ("", {**LONG_RUN, "mixed_precision": "mixed_bfloat16"}, False,
     "the default with mixed precision"),
    ("avx512f", {"epochs": 1, "xla": True}, True, "asked for"),
    ("", {**LONG_RUN, "xla": False}, False, "turned off"),
])
def test_xla_is_the_default_where_its_step_is_the_faster(dataset, tmp_path, monkeypatch,
                                                         flags, options, xla, reason):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing" if flags is None
                        else write_cpuinfo(tmp_path, flags))
    the_plan = training.plan(dataset, tmp_path / "run", REDUCED, TrainingOptions(**options))
    assert the_plan.options.xla is xla
    assert the_plan.xla_reason.startswith(reason), the_plan.xla_reason


@pytest.mark.slow
def test_a_long_run_on_a_cpu_without_avx512_compiles_with_xla_and_resumes_bit_identical(
        dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "CPUINFO", write_cpuinfo(tmp_path, ""))
    run = {**FIT_ARGS, **LONG_RUN, "validation_steps": 1, "backup_every": 0}
    reference = keras_alexnet.fit(dataset, tmp_path / "straight", config=REDUCED,
                                  callbacks=[StopAtStep(2 * STEPS)], **run)
    assert reference.model.jit_compile is True
    assert "  step        XLA, the default on a CPU without AVX-512" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "straight" / "run.json").read_text())["options"]
    assert recorded["xla"] is True

    keras_alexnet.fit(dataset, tmp_path / "resumed", config=REDUCED,
                      callbacks=[StopAtStep(STEPS + 2)], **run)  # stopped mid-epoch 2
    resumed = keras_alexnet.fit(dataset, tmp_path / "resumed", config=REDUCED,
                                callbacks=[StopAtStep(2 * STEPS)], **run)
    assert resumed.model.jit_compile is True
    assert_bit_identical(resumed.model.get_weights(), reference.model.get_weights())
