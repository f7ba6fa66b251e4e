"""Whole-model checkpoints: `<model_dir>/checkpoints/epoch-NNNN.keras`, one per epoch.

Each file holds the architecture, the weights and the optimiser's state (momentum,
iteration count, learning rate), so training resumes exactly where it stopped and
export, evaluation and the pictures need nothing else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras

# Registers AlexNet, TowerLayer, LocalResponseNormalization and PaperSGD with Keras, so
# that every checkpoint this module loads deserialises.
import keras_alexnet.model
import keras_alexnet.optimizer  # noqa: F401

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^epoch-(\d{4,})\.keras$")


def checkpoint_path(model_dir: str | Path, epoch: int) -> Path:
    """The checkpoint written after `epoch` epochs (1-based, as Keras counts)."""
    return Path(model_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.keras"


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


def save_checkpoint(model: keras.Model, path: str | Path) -> Path:
    """Writes atomically: a kill during the write leaves the previous checkpoint the latest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")  # Keras wants the .keras suffix
    model.save(partial)
    os.replace(partial, path)
    return path
