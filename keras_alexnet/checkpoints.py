"""The model directory: whole-model checkpoints, the step backup, the log and the run file.

    <model_dir>/checkpoints/epoch-NNNN.keras   after every epoch
    <model_dir>/checkpoints/backup.keras       the newest step backup (one at a time)
    <model_dir>/training_log.csv               one row per epoch
    <model_dir>/run.json                       the run's seed, so any run can be repeated

Each `.keras` file holds the architecture with the input contract (part of the model's
own config: `keras_alexnet.network.AlexNet`), the weights and the optimiser's state
(momentum, iteration count, learning rate), and a `keras_alexnet.json` member with
what Keras does not keep: where in the run it was written.  So training resumes
exactly where it stopped, and export, evaluation, prediction and the pictures need
nothing else.  `model_dir` may be a `tf.io.gfile` URL (`gs://bucket/run`,
`tfrecords_tools.base.storage`): each file is still written whole or not at all.  Checkpoints
written before the contract was part of the model's config
keep it in `keras_alexnet.json` and a member of its own; `load_model` reads those too.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_alexnet.contract import MEAN_IMAGE_MEMBER, METADATA_KEY, InputContract
from keras_alexnet.errors import CheckpointError
from keras_alexnet.network import FEATURES, OUTPUT  # registers every class a checkpoint holds
from tfrecords_tools.base import storage
from tfrecords_tools.base.files import atomic_path

CHECKPOINT_DIR = "checkpoints"
BACKUP_NAME = "backup.keras"
LOG_NAME = "training_log.csv"
RUN_NAME = "run.json"
METADATA_MEMBER = "keras_alexnet.json"  # ignored by Keras's loader
KERAS_CONFIG_MEMBER = "config.json"  # Keras's: the model's serialised config
_NAME = re.compile(r"^epoch-(\d{4,})\.keras$")


def checkpoint_path(model_dir: str | storage.PathOrUrl, epoch: int) -> storage.PathOrUrl:
    """The checkpoint written after `epoch` epochs (1-based, as Keras counts)."""
    return storage.path(model_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.keras"


def backup_path(model_dir: str | storage.PathOrUrl) -> storage.PathOrUrl:
    """The step backup: the whole training state in the middle of an epoch."""
    return storage.path(model_dir) / CHECKPOINT_DIR / BACKUP_NAME


def list_checkpoints(model_dir: str | storage.PathOrUrl) -> list[tuple[int, storage.PathOrUrl]]:
    """(epoch, path) of every checkpoint in `model_dir`, oldest first."""
    directory = storage.path(model_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = ((_NAME.match(path.name), path) for path in directory.iterdir())
    return sorted((int(match.group(1)), path) for match, path in found if match)


def latest_checkpoint(model_dir: str | storage.PathOrUrl) -> storage.PathOrUrl | None:
    """The checkpoint of the last finished epoch, or None when there is none yet."""
    checkpoints = list_checkpoints(model_dir)
    return checkpoints[-1][1] if checkpoints else None


def checkpoint_epoch(path: str | storage.PathOrUrl) -> int:
    """The epoch count in a checkpoint's name."""
    match = _NAME.match(storage.path(path).name)
    if not match:
        raise CheckpointError(f"{path}: not a checkpoint name (expected epoch-NNNN.keras)")
    return int(match.group(1))


def read_log(model_dir: str | storage.PathOrUrl) -> list[dict[str, str]]:
    """The rows of `training_log.csv` (empty when there is none)."""
    path = storage.path(model_dir) / LOG_NAME
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@dataclasses.dataclass(frozen=True)
class Best:
    """The best epoch of a run (1-based) by `metric`, the top-1 accuracy logged."""

    epoch: int
    metric: str  # "val_top1", or "top1" for a run without a validation split
    accuracy: float
    epochs: int  # epochs logged

    def __str__(self) -> str:
        split = "validation" if self.metric.startswith("val_") else "training"
        return (f"the best {split} top-1 error, {1 - self.accuracy:.4f} at epoch "
                f"{self.epoch} of {self.epochs}")


def best_epoch(model_dir: str | storage.PathOrUrl) -> Best | None:
    """The epoch of `training_log.csv` with the best validation top-1 (training top-1
    without a validation split), the earliest of equals; None with no scored epoch."""
    rows = read_log(model_dir)
    metric = "val_top1" if any(_number(row.get("val_top1")) is not None for row in rows) \
        else "top1"
    scored = [(_number(row.get(metric)), int(row["epoch"]) + 1) for row in rows]
    scored = [(accuracy, epoch) for accuracy, epoch in scored if accuracy is not None]
    if not scored:
        return None
    accuracy, epoch = max(scored, key=lambda pair: (pair[0], -pair[1]))
    return Best(epoch, metric, accuracy, len(rows))


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):  # no column, or CSVLogger's "NA"
        return None


#: Which checkpoint of a model directory to use (`resolve`): the best epoch's is the
#: default for everything but resuming, which takes the latest.
CHOICES = ("best", "latest")


def resolve(path_or_model_dir: str | storage.PathOrUrl, which: str | int = "best"
            ) -> storage.PathOrUrl:
    """A `.keras` file as given, or a model directory's checkpoint: `which` is "best"
    (the best epoch's, `best_epoch`, where it is kept; else the latest), "latest", or
    an epoch number."""
    return choose(path_or_model_dir, which)[0]


def describe(path_or_model_dir: str | storage.PathOrUrl, which: str | int = "best") -> str:
    """Which checkpoint `resolve` takes, and why, in a line."""
    return choose(path_or_model_dir, which)[1]


def choose(path_or_model_dir: str | storage.PathOrUrl, which: str | int = "best"
           ) -> tuple[storage.PathOrUrl, str]:
    """The checkpoint `resolve` takes, and the line `describe` gives, from one listing
    and one read of the log."""
    path = storage.path(path_or_model_dir)
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint or model directory")
        return path, f"checkpoint {path}"
    kept = dict(list_checkpoints(path))
    if not kept:
        raise FileNotFoundError(f"{path}: no checkpoints (expected "
                                f"{path / CHECKPOINT_DIR}/epoch-NNNN.keras); train one "
                                f"with `python -m keras_alexnet train`")
    latest, best = max(kept), best_epoch(path)
    if which == "latest":
        epoch = latest
    elif which == "best":
        epoch = best.epoch if best and best.epoch in kept else latest
    elif str(which).isdigit() and int(which) in kept:
        epoch = int(which)
    else:
        raise CheckpointError(f"{path}: no checkpoint of epoch {which!r}; kept: best, "
                              f"latest, epochs {', '.join(map(str, sorted(kept)))}")
    if best is not None and best.epoch == epoch:
        why = str(best) + ("" if epoch == latest else f"; the latest is epoch {latest}")
    elif which == "best":
        why = "the latest; the best epoch's is not kept" if best else "the latest"
    else:
        why = "the latest" if epoch == latest else f"epoch {epoch}, as asked"
    return kept[epoch], f"checkpoint {kept[epoch]} ({why})"


def load_model(path_or_model_dir: str | storage.PathOrUrl, *, compile: bool = True,
               which: str | int = "best") -> keras.Model:
    """A `.keras` file, or a model directory's checkpoint (`which`: the best epoch's by
    default, `resolve`).

    The model's `input_contract` is the contract the checkpoint records (None for one
    saved before contracts were recorded).
    """
    path = resolve(path_or_model_dir, which)
    try:
        model = keras.saving.load_model(str(path), compile=compile)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot load the checkpoint ({type(error).__name__}: "
                              f"{error})") from error
    if model.input_contract is None:
        model.input_contract = _legacy_contract(path)
    return model


def _read_member(path: storage.PathOrUrl, name: str) -> bytes | None:
    try:
        with path.open("rb") as file, zipfile.ZipFile(file) as archive:
            return archive.read(name) if name in archive.namelist() else None
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path}: cannot load the checkpoint ({error})") from error


def read_metadata(path: str | storage.PathOrUrl) -> dict:
    """The `keras_alexnet.json` member of a checkpoint ({} for one written without it)."""
    member = _read_member(storage.path(path), METADATA_MEMBER)
    try:
        return json.loads(member) if member is not None else {}
    except ValueError as error:
        raise CheckpointError(f"{path}: cannot load the checkpoint ({error})") from error


def read_contract(path_or_model_dir: str | storage.PathOrUrl) -> InputContract | None:
    """The input contract a checkpoint records, or None for one saved without it; read
    from the file, without loading the model."""
    path = resolve(path_or_model_dir)
    member = _read_member(path, KERAS_CONFIG_MEMBER)
    try:
        layers = json.loads(member)["config"]["layers"] if member else []
        fields = next((layer["config"].get("input_contract") for layer in layers
                       if layer["name"] in (OUTPUT, FEATURES)), None)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: cannot load the checkpoint (its "
                              f"{KERAS_CONFIG_MEMBER}: {error!r})") from error
    return InputContract.from_config(fields) if fields else _legacy_contract(path)


def _legacy_contract(path: storage.PathOrUrl) -> InputContract | None:
    """The contract of a checkpoint written before it was part of the model's config."""
    fields = read_metadata(path).get(METADATA_KEY)
    if fields is None:
        return None
    return InputContract.from_config(fields, _read_member(path, MEAN_IMAGE_MEMBER))


def state_bytes(model: keras.Model) -> int:
    """Bytes of the model's and its optimizer's variables: about what a checkpoint takes."""
    variables = list(model.variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_checkpoint(model: keras.Model, path: str | storage.PathOrUrl, metadata: dict | None = None
                    ) -> storage.PathOrUrl:
    """Writes atomically: a kill during the write leaves the previous checkpoint the latest.

    `metadata` goes into the `keras_alexnet.json` member (the model's `input_contract`
    is in its own config).  An interrupted or failed write leaves no partial
    file behind; a full disk is an OSError naming the directory, the bytes needed and
    the bytes free.
    """
    path = storage.path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Keras wants the .keras suffix, which the default temporary name lacks.  (For
        # a URL the file is written locally first, then uploaded.)
        with atomic_path(path, path.with_name(f".partial-{path.name}")) as partial:
            model.save(partial)
            with zipfile.ZipFile(partial, "a") as archive:
                archive.writestr(METADATA_MEMBER, json.dumps(metadata or {}, indent=1))
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        local = Path(tempfile.gettempdir()) if storage.is_url(path) else path.parent
        full = OSError(f"{local}: no space left on the device to save {path.name} "
                       f"(it needs about {state_bytes(model):,} bytes, "
                       f"{shutil.disk_usage(local).free:,} are free); free some "
                       f"space and rerun the same command to resume")
        full.errno = errno.ENOSPC
        raise full from error
    return path
