"""`keras_alexnet.fit`: train AlexNet on the converter's shards the paper's way [paper §5].

A run writes into `model_dir`:
    checkpoints/epoch-NNNN.keras   the whole model with optimiser state, every epoch
    training_log.csv               one row per epoch (Keras CSVLogger)
    tensorboard/                   TensorBoard event files
and a rerun with the same `model_dir` resumes from the latest checkpoint: same epoch,
same learning rate, same momentum, and (with a `seed`) the same images in the same
order as a run that never stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import math
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_alexnet import checkpoints, data
from keras_alexnet.config import AlexNetConfig
from keras_alexnet.distribute import is_chief, keras_multi_worker_fixes, select_strategy
from keras_alexnet.model import build_model
from keras_alexnet.optimizer import PaperSGD
from keras_alexnet.preprocessing import load_stats
from tfrecords_tools.schema import LABELS, read_labels

LOG_NAME = "training_log.csv"
LR_DIVISOR = 10.0  # "divide the learning rate by 10" [paper §5]


# --- callbacks ----------------------------------------------------------------------------

class DivideLearningRateOnPlateau(keras.callbacks.Callback):
    """Divides the learning rate by 10 when validation error stops improving [paper §5].

    "Stops improving" means no better error for `patience` epochs at the current
    learning rate; it happens at most `max_reductions` times (three in the paper).
    Writes the epoch's learning rate into the logs as `learning_rate`.  A resumed run
    passes the log rows of the epochs already trained (`trained`), and the state is
    rebuilt from them, so a killed run carries on with the same schedule.
    """

    def __init__(self, initial_learning_rate: float, monitor: str = "val_top1",
                 patience: int = 5, max_reductions: int = 3, min_delta: float = 0.0,
                 trained: list[dict[str, str]] = ()):
        super().__init__()
        self.initial_learning_rate = initial_learning_rate
        self.monitor, self.patience = monitor, patience
        self.max_reductions, self.min_delta = max_reductions, min_delta
        self.trained = list(trained)
        self.best, self.wait = None, 0

    def current_learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _reductions(self, learning_rate: float) -> int:
        return round(math.log10(self.initial_learning_rate / learning_rate))

    def on_train_begin(self, logs=None):
        """Replays the epochs already trained at the current learning rate."""
        learning_rate = self.current_learning_rate()
        self.best, self.wait = None, 0
        for row in self.trained:
            if math.isclose(float(row["learning_rate"]), learning_rate, rel_tol=1e-4):
                self._observe(float(row[self.monitor]))

    def _observe(self, accuracy: float) -> None:
        if self.best is None or accuracy > self.best + self.min_delta:
            self.best, self.wait = accuracy, 0
        else:
            self.wait += 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        learning_rate = self.current_learning_rate()
        logs["learning_rate"] = learning_rate
        if self.monitor not in logs:
            return
        self._observe(float(logs[self.monitor]))
        if self.wait >= self.patience and self._reductions(learning_rate) < self.max_reductions:
            self.model.optimizer.learning_rate = learning_rate / LR_DIVISOR
            self.best, self.wait = None, 0
            print(f"\nEpoch {epoch + 1}: {self.monitor} stopped improving; learning rate "
                  f"{learning_rate:g} -> {learning_rate / LR_DIVISOR:g}")


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers where (no checkpoint follows)."""

    def __init__(self):
        super().__init__()
        self.epoch, self.failed_at = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_at = (self.epoch, batch)
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves `epoch-NNNN.keras` after every epoch and keeps the newest `keep` of them.

    In a multi-worker run every worker saves (saving may need collective reads of the
    variables), but only the chief into `model_dir`.
    """

    def __init__(self, model_dir: Path, keep: int | None, chief: bool, nan: StopOnNaN):
        super().__init__()
        self.model_dir, self.keep, self.chief, self.nan = model_dir, keep, chief, nan

    def on_epoch_end(self, epoch, logs=None):
        if self.nan.failed_at is not None:
            return
        if not self.chief:
            with tempfile.TemporaryDirectory() as scratch:
                checkpoints.save_checkpoint(self.model, checkpoints.checkpoint_path(
                    scratch, epoch + 1))
            return
        checkpoints.save_checkpoint(self.model,
                                    checkpoints.checkpoint_path(self.model_dir, epoch + 1))
        if self.keep:
            for _, old in checkpoints.list_checkpoints(self.model_dir)[:-self.keep]:
                old.unlink()


# --- the training log ---------------------------------------------------------------------

def read_log(model_dir: str | Path) -> list[dict[str, str]]:
    """The rows of `training_log.csv` (empty when there is none)."""
    path = Path(model_dir) / LOG_NAME
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _truncate_log(model_dir: Path, epochs_done: int) -> list[dict[str, str]]:
    """Drops rows of epochs newer than the checkpoint (a kill between log and save)."""
    path = model_dir / LOG_NAME
    rows = read_log(model_dir)
    kept = [row for row in rows if int(row["epoch"]) < epochs_done]
    if len(kept) != len(rows):
        with open(path, newline="") as file:
            header = next(csv.reader(file))
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, header)
            writer.writeheader()
            writer.writerows(kept)
    return kept


# --- fit ----------------------------------------------------------------------------------

def _build(config: AlexNetConfig, devices, mixed_precision: str | None) -> keras.Model:
    """The model, its layers computing in `mixed_precision` (they keep the policy when
    saved, so a resumed run keeps it too) without changing the global policy."""
    previous = keras.mixed_precision.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy(mixed_precision)
    try:
        return build_model(config, devices=devices)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _continue_dropout_streams(model: keras.Model, seed: int, steps_done: int) -> None:
    """Puts each dropout layer's random stream where `steps_done` training steps leave it.

    A `.keras` file does not keep the dropout seed state (Keras draws a new seed on
    load), and each step advances it by one: seeded from `seed`, a resumed run drops
    the same units as a run that never stopped.
    """
    states = [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]
    for index, state in enumerate(states):
        state.assign(np.array([seed * 1_000 + index, steps_done], state.dtype))


def _num_classes(data_dir: Path, config: AlexNetConfig | None) -> int:
    labels = data_dir / LABELS
    if labels.exists():
        count = len(read_labels(labels))
        if config is not None and config.num_classes != count:
            raise ValueError(f"config.num_classes is {config.num_classes} but {labels} "
                             f"lists {count} classes")
        return count
    if config is None:
        raise ValueError(f"{data_dir}: no labels.txt; pass a config with num_classes")
    return config.num_classes


def _check_compatible(model: keras.Model, path: Path, num_classes: int,
                      config: AlexNetConfig | None) -> None:
    """A checkpoint must match the data (classes) and any config asked for."""
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise ValueError(f"{path}: the checkpoint classifies {classes} classes but the data "
                         f"has {num_classes}; use another model_dir")
    if config is not None:
        size = model.input_shape[1]
        if size != config.image_size:
            raise ValueError(f"{path}: the checkpoint takes {size}x{size} inputs but the "
                             f"config asks for {config.image_size}; use another model_dir")
        expected = build_model(config, devices=("", "")).count_params()
        if model.count_params() != expected:
            raise ValueError(f"{path}: the checkpoint has {model.count_params():,} "
                             f"parameters but the config gives {expected:,}; use another "
                             f"model_dir")


def _resume_or_build(model_dir: Path, strategy: tf.distribute.Strategy, num_classes: int,
                     config: AlexNetConfig | None, *, devices, mixed_precision: str | None,
                     make_optimizer: Callable[[], keras.optimizers.Optimizer], xla: bool
                     ) -> tuple[keras.Model, int]:
    """The latest checkpoint's model and epoch count, else a new model; compiled.

    Everything is created in the strategy's scope (the optimizer too: its slots must
    be variables of the same strategy as the weights)."""
    latest = checkpoints.latest_checkpoint(model_dir)
    with strategy.scope():
        if latest is not None:
            model = checkpoints.load_model(latest)
            optimizer = model.optimizer  # its momentum, iterations and learning rate
            initial_epoch = checkpoints.checkpoint_epoch(latest)
        else:
            config = dataclasses.replace(config or AlexNetConfig(), num_classes=num_classes)
            model = _build(config, devices, mixed_precision)
            optimizer = make_optimizer()
            optimizer.build(model.trainable_variables)
            initial_epoch = 0
        model.compile(
            optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                     keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")],
            jit_compile=xla)
    if latest is not None:
        _check_compatible(model, latest, num_classes, config)
    return model, initial_epoch


def _logs_and_checkpoints(model_dir: Path, chief: bool, nan: StopOnNaN,
                          keep_checkpoints: int | None, tensorboard: bool
                          ) -> list[keras.callbacks.Callback]:
    """The CSV and TensorBoard logs (chief only), then the checkpoints: a kill between
    the log row and the checkpoint leaves a row that the resume drops."""
    callbacks = []
    if chief:
        callbacks.append(keras.callbacks.CSVLogger(str(model_dir / LOG_NAME), append=True))
        if tensorboard and importlib.util.find_spec("tensorboard"):
            callbacks.append(keras.callbacks.TensorBoard(str(model_dir / "tensorboard")))
        elif tensorboard:
            print("TensorBoard logs skipped: `pip install tensorboard` to write them")
    return [*callbacks, EpochCheckpoint(model_dir, keep_checkpoints, chief, nan)]


def fit(data_dir: str | Path, model_dir: str | Path, *, config: AlexNetConfig | None = None,
        epochs: int = 90, batch_size: int = 128, learning_rate: float = 0.01,
        momentum: float = 0.9, weight_decay: float = 0.0005, patience: int = 5,
        max_lr_reductions: int = 3, min_delta: float = 0.0,
        steps_per_epoch: int | None = None, validation_steps: int | None = None,
        mean: str = "channel", lighting_stddev: float = data.LIGHTING_STDDEV,
        seed: int | None = None, deterministic: bool = False,
        mixed_precision: str | None = None, xla: bool = False,
        strategy: str | tf.distribute.Strategy = "auto",
        devices: tuple[str, str] | None = None, keep_checkpoints: int | None = 5,
        tensorboard: bool = True, verbose: int | str = "auto") -> keras.callbacks.History:
    """Trains AlexNet on `data_dir`'s shards, checkpointing into `model_dir` each epoch.

    Defaults are the paper's [paper §5]: batch 128, momentum 0.9, weight decay 0.0005
    inside the momentum (`PaperSGD`), learning rate 0.01 divided by 10 when the
    validation error stops improving (at most three times), 90 epochs, with random
    crops, reflections and PCA lighting [paper §4.1].

    Args:
        data_dir: the converter's output: `train-*` shards (and `validation-*` for the
            learning-rate schedule; without them it watches the training error),
            `labels.txt`, optional `stats.json` / `mean_image.npy`.
        model_dir: where checkpoints and logs go; resumed from if it has checkpoints.
        config: the network (`AlexNetConfig()` with the class count of `labels.txt`
            by default); must match a checkpoint being resumed.
        epochs: total epochs, counting those already done in `model_dir`.
        patience: epochs without a better validation error before dividing the rate.
        min_delta: the smallest accuracy gain counted as an improvement.
        steps_per_epoch: batches per epoch; default one pass over the training split.
        validation_steps: batches of validation per epoch; default the whole split.
        mean: "channel" (per-channel mean) or "pixel" (the paper's mean image).
        seed: reproducible data order and augmentation (resumes included).
        deterministic: make the input order independent of thread timing.
        mixed_precision: a Keras dtype policy such as "mixed_float16" (GPUs) or
            "mixed_bfloat16" for a new model; None trains in float32.  A resumed model
            keeps the policy it was saved with.
        xla: compile the training step with XLA (one device per tower or replica).
        strategy: "auto", "towers", "mirrored", "multi-worker" (`keras_alexnet.distribute`)
            or a `tf.distribute.Strategy`.
        devices: the two towers' devices for `build_model` (model parallel).
        keep_checkpoints: how many newest checkpoints to keep (None keeps all).
        tensorboard: write TensorBoard logs (when the tensorboard package is installed).

    Returns: the Keras History of this call's epochs.
    Raises: FloatingPointError when the loss becomes NaN or infinite (the last good
        checkpoint stays the latest).
    """
    # Multi-worker collectives must be configured before TensorFlow starts up.
    if isinstance(strategy, str):
        strategy = select_strategy(strategy)
    data_dir, model_dir = Path(data_dir), Path(model_dir)
    chief = is_chief(strategy)
    num_classes = _num_classes(data_dir, config)
    train_shards = data.list_shards(data_dir, "train")
    data.check_shards(train_shards, num_classes)
    has_validation = any(data_dir.glob("validation-?????-of-?????"))
    if has_validation:
        data.check_shards(data.list_shards(data_dir, "validation"), num_classes)
    model, initial_epoch = _resume_or_build(
        model_dir, strategy, num_classes, config, devices=devices,
        mixed_precision=mixed_precision,
        make_optimizer=functools.partial(PaperSGD, learning_rate, momentum, weight_decay),
        xla=xla)
    if initial_epoch >= epochs:
        print(f"{model_dir}: already trained for {initial_epoch} epochs (asked for {epochs})")
        return keras.callbacks.History()

    image_size = model.input_shape[1]
    stats = load_stats(data_dir)
    records = data.count_records(data_dir, "train")
    if records < batch_size:
        raise ValueError(f"{data_dir}: {records} training images, fewer than one batch of "
                         f"{batch_size}")
    steps_per_epoch = steps_per_epoch or records // batch_size
    seed = random.randrange(2**20) if seed is None else seed
    _continue_dropout_streams(model, seed, initial_epoch * steps_per_epoch)

    def training_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return data.training_dataset(
            data_dir, image_size, context.get_per_replica_batch_size(batch_size),
            num_classes=num_classes, stats=stats, mean=mean, lighting_stddev=lighting_stddev,
            seed=seed, first_batch=initial_epoch * steps_per_epoch,
            # (per pipeline: a 1/n share of the images in 1/n-size batches)
            batches_per_epoch=records // batch_size, deterministic=deterministic,
            input_context=context)

    train = strategy.distribute_datasets_from_function(training_input)
    validation = None
    if has_validation:
        validation = data.evaluation_dataset(data_dir, image_size, batch_size,
                                             num_classes=num_classes, stats=stats, mean=mean,
                                             records=data.count_records(data_dir, "validation"))

    model_dir.mkdir(parents=True, exist_ok=True)
    trained = (_truncate_log(model_dir, initial_epoch) if chief
               else read_log(model_dir)[:initial_epoch])
    schedule = DivideLearningRateOnPlateau(
        learning_rate, monitor="val_top1" if has_validation else "top1", patience=patience,
        max_reductions=max_lr_reductions, min_delta=min_delta, trained=trained)
    nan = StopOnNaN()
    callbacks = [schedule, nan,
                 *_logs_and_checkpoints(model_dir, chief, nan, keep_checkpoints, tensorboard)]

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_multi_worker_fixes(model)
    with strategy.scope():
        history = model.fit(train, epochs=epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, validation_data=validation,
                            validation_steps=validation_steps, callbacks=callbacks,
                            shuffle=False, verbose=verbose if chief else 0)
    if nan.failed_at is not None:
        epoch, batch = nan.failed_at
        last = checkpoints.latest_checkpoint(model_dir)
        raise FloatingPointError(
            f"training loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1} "
            f"(learning rate {schedule.current_learning_rate():g}); the last good "
            f"checkpoint is {last or 'none'}; try a lower learning rate")
    return history

