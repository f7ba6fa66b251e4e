"""Resume state: everything that lets a rerun of `fit` continue where a run stopped.

A run is continued from the newest of its epoch checkpoints and its step backup (the
layout is `keras_alexnet.checkpoints`'s), with the same seed (`run.json`), the rows of
the epochs it finished (`training_log.csv`), the dropout streams where the steps done
left them, and, mid-epoch, the epoch's training metrics so far: the weights end
bit-identical to those of a run that never stopped.  `Progress` tracks where the run
is and `Checkpoints` writes that state as training goes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from keras_alexnet import checkpoints
from keras_alexnet.checkpoints import read_log
from keras_alexnet.config import TrainingOptions
from keras_alexnet.errors import AlexNetError
from tfrecords_tools.base import storage
from tfrecords_tools.base.files import atomic_path, write_atomically

# --- the run file ---------------------------------------------------------------------------


def run_seed(model_dir: storage.PathOrUrl, seed: int | None) -> tuple[int, bool]:
    """The run's seed and whether it is drawn now (not recorded, not given).

    A resumed run takes the seed it started with (`run.json`); another seed would
    change the images' order and augmentation, so it is refused.
    """
    path = model_dir / checkpoints.RUN_NAME
    recorded = json.loads(path.read_text())["seed"] if path.exists() else None
    if recorded is not None and seed is not None and seed != recorded:
        raise AlexNetError(f"seed {seed} differs from the seed {recorded} that {model_dir} "
                           f"was started with ({path}); leave seed out to resume, or use "
                           f"another model_dir")
    if recorded is not None:
        return recorded, False
    return (random.randrange(2**20), True) if seed is None else (seed, False)


def recorded_source(model_dir: storage.PathOrUrl) -> str | None:
    """The checkpoint a fine-tuning run in `model_dir` started from, if any."""
    path = model_dir / checkpoints.RUN_NAME
    return (json.loads(path.read_text()).get("init_from") or {}).get("path") \
        if path.exists() else None


def write_run_file(model_dir: storage.PathOrUrl, seed: int, options: TrainingOptions,
                   source: dict | None = None) -> None:
    """`run.json`: the seed and the options of the latest call, so any run can be
    repeated (the seed never changes once recorded), and the checkpoint a fine-tuning
    run started from with its sha256 (kept once recorded)."""
    path = model_dir / checkpoints.RUN_NAME
    recorded = json.loads(path.read_text()) if path.exists() else {}
    run = {"seed": seed, "options": {**options.to_json(), "seed": seed}}
    if source or recorded.get("init_from"):
        run["init_from"] = recorded.get("init_from") or source
    model_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(run, indent=1) + "\n")


# --- the training log -------------------------------------------------------------------------

def truncate_log(model_dir: storage.PathOrUrl, epochs_done: int) -> list[dict[str, str]]:
    """The rows of the epochs the checkpoint holds; newer ones (a kill between log and
    save, or an epoch a callback cut short) are dropped from the file."""
    path = model_dir / checkpoints.LOG_NAME
    rows = read_log(model_dir)
    kept = [row for row in rows if int(row["epoch"]) < epochs_done]
    if len(kept) != len(rows):
        with path.open(newline="") as file:
            header = next(csv.reader(file))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, header)
        writer.writeheader()
        writer.writerows(kept)
        write_atomically(path, text.getvalue())
    return kept


def training_log(model_dir: storage.PathOrUrl) -> keras.callbacks.CSVLogger:
    """Keras's CSV logger appending a row per epoch to `training_log.csv`, in the
    columns the file already has (a run resumed by a version that logs more keeps its
    header; Keras would append longer rows under it)."""
    path = model_dir / checkpoints.LOG_NAME
    if isinstance(path, storage.Url):
        return _UploadedLog(path)
    logger = keras.callbacks.CSVLogger(str(path), append=True)
    logger.keys = _columns(path)
    return logger


def _columns(path: Path) -> list[str] | None:
    """The metric columns of an existing log (its header after "epoch"), else None."""
    if not path.exists():
        return None
    with path.open(newline="") as file:
        header = next(csv.reader(file), None)
    return header[1:] if header else None


class _UploadedLog(keras.callbacks.CSVLogger):
    """The log of a model directory at a URL: kept in a local copy, which replaces the
    URL's file (atomically, `files.atomic_path`) after each epoch.  Keras 3.15's
    CSVLogger fails on a `tf.io.gfile` file: it asks the file whether it is `closed`,
    which a GFile cannot answer."""

    def __init__(self, url: storage.Url):
        self._scratch = tempfile.TemporaryDirectory(prefix="log-")
        super().__init__(str(Path(self._scratch.name) / url.name), append=True)
        self.url = url

    def on_train_begin(self, logs=None):
        # Downloaded now, after `truncate_log` has dropped the rows of undone epochs.
        local = Path(self.filename)
        local.unlink(missing_ok=True)
        if self.url.exists():
            local.write_bytes(self.url.read_bytes())
        self.keys = _columns(local)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # writes and flushes the row
        with atomic_path(self.url) as partial:
            shutil.copyfile(self.filename, partial)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._scratch.cleanup()


# --- where to resume --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The newest saved state of a model directory (`path` None for a new run)."""

    path: storage.PathOrUrl | None = None
    epoch: int = 0  # epochs finished
    step: int = 0  # steps done in the next epoch
    steps_per_epoch: int | None = None  # of the run that saved it, mid-epoch
    metrics: dict[str, float] | None = None  # that epoch's training metrics so far

    @property
    def is_backup(self) -> bool:
        return self.path is not None and self.path.name == checkpoints.BACKUP_NAME


def find_resume_point(model_dir: storage.PathOrUrl) -> ResumePoint:
    """The step backup when it is newer than the last epoch checkpoint, else that
    checkpoint, else a new run."""
    latest = checkpoints.latest_checkpoint(model_dir)
    epochs_done = checkpoints.checkpoint_epoch(latest) if latest else 0
    backup = checkpoints.backup_path(model_dir)
    if backup.exists():
        metadata = checkpoints.read_metadata(backup)
        if (metadata.get("epoch", -1), metadata.get("step", 0)) > (epochs_done, 0):
            return ResumePoint(backup, metadata["epoch"], metadata.get("step", 0),
                               metadata.get("steps_per_epoch"), metadata.get("metrics"))
    return ResumePoint(latest, epochs_done) if latest else ResumePoint()


def continue_dropout_streams(model: keras.Model, seed: int, steps_done: int) -> None:
    """Puts each dropout layer's random stream where `steps_done` training steps leave it.

    A `.keras` file does not keep the dropout seed state (Keras draws a new seed on
    load), and each step advances it by one: seeded from `seed`, a resumed run drops
    the same units as a run that never stopped.
    """
    states = [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]
    for index, state in enumerate(states):
        state.assign(np.array([seed * 1_000 + index, steps_done], state.dtype))


# --- keeping the state as the run goes ----------------------------------------------------------

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


class Checkpoints(keras.callbacks.Callback):
    """`epoch-NNNN.keras` after every epoch (the newest `keep` and the best epoch's kept;
    0 keeps all), and the whole training state in `backup.keras` every `backup_every`
    steps (0: never)
    and on demand (`save_backup`, for Ctrl-C or a callback that stops the run
    mid-epoch).

    Every file carries `metadata()` plus its place in the run: `epoch` (epochs
    finished) and `step` (steps done in the next one), the optimizer's `iterations`
    and the training metrics of a part-done epoch.  A backup older than the newest
    epoch checkpoint is deleted.  In a multi-worker run every worker saves (saving
    may need collective reads of the variables), but only the chief into `model_dir`.
    `diverged()` says the loss became NaN: then nothing is saved.
    """

    def __init__(self, model_dir: storage.PathOrUrl, *, progress: Progress, backup_every: int,
                 keep: int, chief: bool, diverged: Callable[[], bool],
                 metadata: Callable[[], dict]):
        super().__init__()
        self.model_dir, self.progress, self.backup_every = model_dir, progress, backup_every
        self.keep, self.chief, self.diverged, self.metadata = keep, chief, diverged, metadata
        self.last_saved: storage.PathOrUrl | None = None

    def _save(self, path: storage.PathOrUrl, position: dict) -> storage.PathOrUrl:
        metadata = {**self.metadata(), **position,
                    "iterations": self.progress.iterations()}
        if not self.chief:
            with tempfile.TemporaryDirectory() as scratch:
                checkpoints.save_checkpoint(self.model, Path(scratch) / path.name, metadata)
            return path
        self.last_saved = checkpoints.save_checkpoint(self.model, path, metadata)
        return path

    def save_backup(self) -> storage.PathOrUrl | None:
        """Saves the state where the run is now; None when an epoch checkpoint has it."""
        steps = self.progress.steps_done()
        if self.progress.epoch is None or steps == 0 or self.diverged():
            return None
        return self._save(checkpoints.backup_path(self.model_dir), {
            "epoch": self.progress.epoch, "step": steps,
            "metrics": self.progress.metric_values()})

    def on_train_batch_end(self, batch, logs=None):
        if self.diverged():
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
        if self.diverged():
            return
        if not self.progress.complete():  # stopped mid-epoch: continue it on resume
            self.save_backup()
            return
        self._save(checkpoints.checkpoint_path(self.model_dir, epoch + 1),
                   {"epoch": epoch + 1, "step": 0})
        if self.chief:
            checkpoints.backup_path(self.model_dir).unlink(missing_ok=True)
            if self.keep:  # the newest `keep`, and the best epoch's (`checkpoints.resolve`)
                best = checkpoints.best_epoch(self.model_dir)
                for number, old in checkpoints.list_checkpoints(self.model_dir)[:-self.keep]:
                    if best is None or number != best.epoch:
                        old.unlink()
