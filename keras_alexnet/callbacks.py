"""The callbacks `keras_alexnet.fit` runs beside the user's: the paper's learning-rate
schedule and the NaN stop (where the run is and its checkpoints are
`keras_alexnet.resume`'s).

A run resumed in the middle of an epoch calls Keras's `fit` twice (the rest of that
epoch, then the epochs after it); `RunCallbacks` makes every callback, the user's too,
see one run: one `on_train_begin`, one `on_train_end`, the epochs in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

from keras_alexnet.config import TrainingOptions
from keras_alexnet.errors import AlexNetError
from keras_alexnet.resume import Progress

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
                 patience: int = TrainingOptions.patience,
                 max_reductions: int = TrainingOptions.max_lr_reductions,
                 min_delta: float = TrainingOptions.min_delta,
                 trained: list[dict[str, str]] = (), progress: Progress | None = None,
                 say: Callable[[str], None] = print):
        super().__init__()
        if initial_learning_rate <= 0:
            raise AlexNetError(f"learning_rate must be positive, got {initial_learning_rate}")
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
