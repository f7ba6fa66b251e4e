"""Training curves from `<model_dir>/training_log.csv`: loss, top-1/top-5 error, learning rate.

The log is Keras's `CSVLogger` format: a header, then one row per epoch with
`epoch` (0-based), `loss`, the accuracies `top1`/`top5` (error = 1 - accuracy
[paper §6]), `learning_rate`, and the same with a `val_` prefix when there is a
validation set.  Columns that are absent are left out of the picture.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from keras_alexnet.checkpoints import LOG_NAME
from keras_alexnet.errors import AlexNetError
from keras_alexnet.figures.canvas import new_figure, save_png

REQUIRED = ("epoch", "loss")
TRAIN_COLOUR, VALIDATION_COLOUR = "#1f77b4", "#ff7f0e"
LR_COLOUR = "#2ca02c"


def read_training_log(path: str | Path) -> dict[str, np.ndarray]:
    """Column name -> values (float64, NaN where a cell is empty).

    `path` is the CSV or a model directory holding `training_log.csv`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training log; `python -m keras_alexnet train` "
                                f"writes it into the model directory")
    with open(path, newline="", encoding="utf-8") as lines:
        reader = csv.DictReader(lines)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise AlexNetError(f"{path}: missing column(s) {', '.join(missing)}; found "
                               f"{reader.fieldnames}")
        columns: dict[str, list[float]] = {name: [] for name in reader.fieldnames}
        for row in reader:
            for name, value in row.items():
                if name is None:  # more cells than header names
                    raise AlexNetError(f"{path}:{reader.line_num}: more values than columns")
                try:
                    columns[name].append(float(value) if value not in ("", None) else math.nan)
                except ValueError as error:
                    raise AlexNetError(f"{path}:{reader.line_num}: column {name!r}: "
                                       f"{value!r} is not a number") from error
    if not columns["epoch"]:
        raise AlexNetError(f"{path}: no epochs logged yet")
    return {name: np.array(values) for name, values in columns.items()}


def draw_curves(log: dict[str, np.ndarray]) -> Figure:
    """Three panels: loss, error (%) and learning rate against the epoch (1-based)."""
    figure = new_figure(1500, 450)
    loss, error, rate = figure.subplots(1, 3)
    epochs = log["epoch"] + 1

    def plot(axes, key, transform, colour, style, label, **options):
        if key in log and not np.isnan(log[key]).all():
            axes.plot(epochs, transform(log[key]), style, color=colour, label=label,
                      linewidth=2, **options)

    for prefix, colour, name in (("", TRAIN_COLOUR, "train"),
                                 ("val_", VALIDATION_COLOUR, "validation")):
        plot(loss, f"{prefix}loss", lambda v: v, colour, "-", name)
        plot(error, f"{prefix}top1", lambda v: 100 * (1 - v), colour, "-", f"{name} top-1")
        plot(error, f"{prefix}top5", lambda v: 100 * (1 - v), colour, "--", f"{name} top-5")
    # An epoch's rate holds for the whole epoch: draw steps, not slopes.
    plot(rate, "learning_rate", lambda v: v, LR_COLOUR, "-", "learning rate",
         drawstyle="steps-post")
    for axes, title, ylabel in ((loss, "Loss", "cross-entropy"),
                                (error, "Error", "error (%)"),
                                (rate, "Learning rate", "learning rate")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    if rate.lines:
        rate.set_yscale("log")  # the paper divides it by 10 [paper §5]
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.92, wspace=0.25)
    return figure


def write_curves(log_path: str | Path, path: str | Path) -> Path:
    """Writes the training curves of a model directory (or its CSV) as a PNG."""
    return save_png(draw_curves(read_training_log(log_path)), path)
