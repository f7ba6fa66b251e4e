"""The model directory: whole-model checkpoints, the step backup, the log and the run file.

    <model_dir>/checkpoints/epoch-NNNN.keras   after every epoch
    <model_dir>/checkpoints/backup.keras       the newest step backup (one at a time)
    <model_dir>/training_log.csv               one row per epoch
    <model_dir>/run.json                       the run's seed, so any run can be repeated

Each `.keras` file holds the architecture, the weights and the optimiser's state
(momentum, iteration count, learning rate), and a `keras_alexnet.json` member with
what Keras does not keep (where in the run it was written), so training resumes
exactly where it stopped and export, evaluation and the pictures need nothing else.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np

# Registers AlexNet, TowerLayer, LocalResponseNormalization and PaperSGD with Keras, so
# that every checkpoint this module loads deserialises.
import keras_alexnet.model
import keras_alexnet.optimizer  # noqa: F401

CHECKPOINT_DIR = "checkpoints"
BACKUP_NAME = "backup.keras"
LOG_NAME = "training_log.csv"
RUN_NAME = "run.json"
METADATA_MEMBER = "keras_alexnet.json"  # ignored by Keras's loader
_NAME = re.compile(r"^epoch-(\d{4,})\.keras$")


def checkpoint_path(model_dir: str | Path, epoch: int) -> Path:
    """The checkpoint written after `epoch` epochs (1-based, as Keras counts)."""
    return Path(model_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.keras"


def backup_path(model_dir: str | Path) -> Path:
    """The step backup: the whole training state in the middle of an epoch."""
    return Path(model_dir) / CHECKPOINT_DIR / BACKUP_NAME


def list_checkpoints(model_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint in `model_dir`, oldest first."""
    directory = Path(model_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = ((_NAME.match(path.name), path) for path in directory.iterdir())
    return sorted((int(match.group(1)), path) for match, path in found if match)


def latest_checkpoint(model_dir: str | Path) -> Path | None:
    """The checkpoint of the last finished epoch, or None when there is none yet."""
    checkpoints = list_checkpoints(model_dir)
    return checkpoints[-1][1] if checkpoints else None


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch count in a checkpoint's name."""
    match = _NAME.match(Path(path).name)
    if not match:
        raise ValueError(f"{path}: not a checkpoint name (expected epoch-NNNN.keras)")
    return int(match.group(1))


def load_model(path_or_model_dir: str | Path, *, compile: bool = True) -> keras.Model:
    """A `.keras` file, or a model directory meaning its latest checkpoint."""
    path = Path(path_or_model_dir)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path}: no checkpoints (expected "
                                    f"{path / CHECKPOINT_DIR}/epoch-NNNN.keras); train one "
                                    f"with `python -m keras_alexnet train`")
        path = latest
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or model directory")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:
        raise ValueError(f"{path}: cannot load the checkpoint ({type(error).__name__}: "
                         f"{error})") from None


def read_metadata(path: str | Path) -> dict:
    """The `keras_alexnet.json` member of a checkpoint ({} for one written without it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_MEMBER not in archive.namelist():
                return {}
            return json.loads(archive.read(METADATA_MEMBER))
    except (zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"{path}: cannot load the checkpoint ({error})") from None


def state_bytes(model: keras.Model) -> int:
    """Bytes of the model's and its optimizer's variables: about what a checkpoint takes."""
    variables = list(model.variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_checkpoint(model: keras.Model, path: str | Path, metadata: dict | None = None
                    ) -> Path:
    """Writes atomically: a kill during the write leaves the previous checkpoint the latest.

    An interrupted or failed write leaves no partial file behind; a full disk is an
    OSError naming the directory, the bytes needed and the bytes free.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")  # Keras wants the .keras suffix
    try:
        model.save(partial)
        if metadata is not None:
            with zipfile.ZipFile(partial, "a") as archive:
                archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=1))
        with open(partial, "rb") as file:
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            full = OSError(f"{path.parent}: no space left on the device to save {path.name} "
                           f"(it needs about {state_bytes(model):,} bytes, "
                           f"{shutil.disk_usage(path.parent).free:,} are free); free some "
                           f"space and rerun the same command to resume")
            full.errno = errno.ENOSPC
            raise full from None
        raise
    return path
