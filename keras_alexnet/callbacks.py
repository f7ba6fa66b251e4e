"""The callbacks `keras_alexnet.fit` runs beside the user's: where the run is, the paper's
learning-rate schedule, the NaN stop, the checkpoints and step backups.

A run resumed in the middle of an epoch calls Keras's `fit` twice (the rest of that
epoch, then the epochs after it); `RunCallbacks` makes every callback, the user's too,
see one run: one `on_train_begin`, one `on_train_end`, the epochs in order.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from keras_alexnet import checkpoints

LR_DIVISOR = 10.0  # "divide the learning rate by 10" [paper §5]


class RunCallbacks(keras.callbacks.CallbackList):
    """One run's callbacks across the `fit` calls of a resumed run.

    `phase(steps)` sets the step count the progress bar shows for the next `fit`;
    `close(logs)` ends the run (Keras's own `on_train_end` calls are held back).
    """

    def __init__(self, callbacks: list[keras.callbacks.Callback], *, model: keras.Model,
                 verbose: int | str, epochs: int):
        super().__init__(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                         verbose=verbose, epochs=epochs, steps=None)
        self._begun = False

    def phase(self, steps: int | None) -> None:
        self.set_params({**self.params, "steps": steps})

    def on_train_begin(self, logs=None):
        if not self._begun:
            self._begun = True
            super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.last_logs = logs

    def close(self) -> None:
        if self._begun:
            super().on_train_end(getattr(self, "last_logs", None))


class Progress(keras.callbacks.Callback):
    """Where the run is: the epoch and the steps done in it (from the optimizer's
    iteration count, so it is right even when Ctrl-C lands between a step and its
    callbacks).

    A run resumed at step `resume[1]` of epoch `resume[0]` gets back the epoch's
    training metrics so far (`metrics`, the metric variables' values), so the epoch's
    logged loss and accuracy are those of an uninterrupted run.  Keras builds the
    metric variables in the first step, so the saved sums are added after it (every
    metric here is a sum and a count: the same additions, in an order that gives the
    same floats).
    """

    def __init__(self, steps_per_epoch: int, resume: tuple[int, int] = (0, 0),
                 metrics: dict[str, float] | None = None):
        super().__init__()
        self.steps_per_epoch, self.resume, self.metrics = steps_per_epoch, resume, metrics
        self.epoch, self.epoch_start = None, 0
        self._pending = self._train_metrics = None

    def iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self._train_metrics = epoch, None
        resumed = epoch == self.resume[0]
        self.epoch_start = self.iterations() - (self.resume[1] if resumed else 0)
        self._pending = self.metrics if resumed and self.metrics else None

    def on_train_batch_end(self, batch, logs=None):
        if self._pending:
            for variable in self.model.metrics_variables:
                if variable.path in self._pending:
                    variable.assign_add(self._pending[variable.path])
            self._pending = None

    def on_test_begin(self, logs=None):
        # Validation resets the metrics; a backup taken during it needs the training ones.
        if self.epoch is not None:
            self._train_metrics = self.metric_values()

    def on_epoch_end(self, epoch, logs=None):
        if self._pending and logs is not None:  # no step was left (stopped in validation)
            for name in {path.split("/")[0] for path in self._pending}:
                total, count = (np.float32(self._pending[f"{name}/{part}"])
                                for part in ("total", "count"))
                logs[name] = float(total / count)
            self._pending = None

    def steps_done(self) -> int:
        """Training steps done in the current epoch."""
        return self.iterations() - self.epoch_start

    def complete(self) -> bool:
        return self.steps_done() >= self.steps_per_epoch

    def metric_values(self) -> dict[str, float]:
        """The epoch's training metric state (captured before validation reset it)."""
        if self._pending:
            return self._pending
        if self._train_metrics is not None:
            return self._train_metrics
        return {v.path: float(keras.ops.convert_to_numpy(v))
                for v in self.model.metrics_variables}


class DivideLearningRateOnPlateau(keras.callbacks.Callback):
    """Divides the learning rate by 10 when validation error stops improving [paper §5].

    "Stops improving" means no better error for `patience` epochs at the current
    learning rate; it happens at most `max_reductions` times (three in the paper).
    Writes the epoch's learning rate into the logs as `learning_rate`.  A resumed run
    passes the log rows of the epochs already trained (`trained`), and the state is
    rebuilt from them, so a killed run carries on with the same schedule.  An epoch
    cut short (a callback stopped the run) is not counted.
    """

    def __init__(self, initial_learning_rate: float, monitor: str = "val_top1",
                 patience: int = 5, max_reductions: int = 3, min_delta: float = 0.0,
                 trained: list[dict[str, str]] = (), progress: Progress | None = None,
                 say: Callable[[str], None] = print):
        super().__init__()
        if initial_learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {initial_learning_rate}")
        self.initial_learning_rate = initial_learning_rate
        self.monitor, self.patience = monitor, patience
        self.max_reductions, self.min_delta = max_reductions, min_delta
        self.trained, self.progress, self.say = list(trained), progress, say
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
        if self.monitor not in logs or (self.progress and not self.progress.complete()):
            return
        self._observe(float(logs[self.monitor]))
        if self.wait >= self.patience and self._reductions(learning_rate) < self.max_reductions:
            self.model.optimizer.learning_rate = learning_rate / LR_DIVISOR
            self.best, self.wait = None, 0
            self.say(f"Epoch {epoch + 1}: {self.monitor} stopped improving; learning rate "
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


class Checkpoints(keras.callbacks.Callback):
    """`epoch-NNNN.keras` after every epoch (the newest `keep` kept), and the whole
    training state in `backup.keras` every `backup_every` steps (0: never) and on
    demand (`save_backup`, for Ctrl-C or a callback that stops the run mid-epoch).

    Every file carries `metadata()` plus its place in the run: `epoch` (epochs
    finished) and `step` (steps done in the next one), the optimizer's `iterations`
    and the training metrics of a part-done epoch.  A backup older than the newest
    epoch checkpoint is deleted.  In a multi-worker run every worker saves (saving
    may need collective reads of the variables), but only the chief into `model_dir`.
    """

    def __init__(self, model_dir: Path, *, progress: Progress, backup_every: int,
                 keep: int | None, chief: bool, nan: StopOnNaN,
                 metadata: Callable[[], dict]):
        super().__init__()
        self.model_dir, self.progress, self.backup_every = model_dir, progress, backup_every
        self.keep, self.chief, self.nan, self.metadata = keep, chief, nan, metadata
        self.last_saved: Path | None = None

    def _save(self, path: Path, position: dict) -> Path:
        metadata = {**self.metadata(), **position,
                    "iterations": self.progress.iterations()}
        if not self.chief:
            with tempfile.TemporaryDirectory() as scratch:
                checkpoints.save_checkpoint(self.model, Path(scratch) / path.name, metadata)
            return path
        self.last_saved = checkpoints.save_checkpoint(self.model, path, metadata)
        return path

    def save_backup(self) -> Path | None:
        """Saves the state where the run is now; None when an epoch checkpoint has it."""
        steps = self.progress.steps_done()
        if self.progress.epoch is None or steps == 0 or self.nan.failed_at is not None:
            return None
        return self._save(checkpoints.backup_path(self.model_dir), {
            "epoch": self.progress.epoch, "step": steps,
            "metrics": self.progress.metric_values()})

    def on_train_batch_end(self, batch, logs=None):
        if self.nan.failed_at is not None:
            # The weights the failing step started from came out of the step before it.
            backup = checkpoints.backup_path(self.model_dir)
            if self.chief and backup.exists() and checkpoints.read_metadata(backup)[
                    "iterations"] >= self.progress.iterations() - 1:
                backup.unlink()
            return
        if not self.backup_every:
            return
        if (self.progress.iterations() % self.backup_every == 0
                and not self.progress.complete()):  # the epoch checkpoint follows
            self.save_backup()

    def on_epoch_end(self, epoch, logs=None):
        if self.nan.failed_at is not None:
            return
        if not self.progress.complete():  # stopped mid-epoch: continue it on resume
            self.save_backup()
            return
        self._save(checkpoints.checkpoint_path(self.model_dir, epoch + 1),
                   {"epoch": epoch + 1, "step": 0})
        if self.chief:
            checkpoints.backup_path(self.model_dir).unlink(missing_ok=True)
            if self.keep:
                for _, old in checkpoints.list_checkpoints(self.model_dir)[:-self.keep]:
                    old.unlink()
