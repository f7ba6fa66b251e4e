"""Top-5 predictions per image with score bars [paper §6.1, Figure 4 left].

As in the paper, the correct label is written under each image and its bar is red
when it is among the five.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure

from keras_alexnet.contract import InputContract, contract_of
from keras_alexnet.errors import AlexNetError
from keras_alexnet.figures.canvas import new_figure, save_png, short_name
from keras_alexnet.figures.examples import Examples, load_examples
from tfrecords_tools.dataset import DatasetInfo

BAR_COLOUR = "#3a6ea5"
TRUE_LABEL_COLOUR = "#d62728"
# One cell per image, in pixels: the image above, its label, then the bars; the class
# names take the left part of the bars' row.
CELL_WIDTH, CELL_HEIGHT = 300, 300
IMAGE_SIZE, NAMES_WIDTH, BAR_HEIGHT = 140, 150, 20


def top_k(probabilities: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most probable classes per row, best first: (indices, scores)."""
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[-1])
    indices = np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]
    return indices, np.take_along_axis(probabilities, indices, axis=-1)


def predict(model: keras.Model, examples: Examples, contract: InputContract,
            batch_size: int = 64) -> np.ndarray:
    """Softmax outputs for the examples' centre crops, preprocessed by `contract`."""
    inputs = examples.network_input(contract)
    return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))


def draw_predictions(images: np.ndarray, probabilities: np.ndarray, labels: Sequence[int],
                     names: Sequence[str], columns: int = 4, k: int = 5) -> Figure:
    """One cell per image: the image, its true label under it, the top-k score bars.

    Bars run from 0 to 1 on a fixed scale, so their lengths compare across images.
    """
    if not len(images) == len(probabilities) == len(labels):
        raise AlexNetError(f"images, probabilities and labels must have the same length, got "
                           f"{len(images)}, {len(probabilities)}, {len(labels)}")
    if np.shape(probabilities)[-1] != len(names):
        raise AlexNetError(f"{np.shape(probabilities)[-1]} classes in the probabilities but "
                           f"{len(names)} class names")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    width, height = columns * CELL_WIDTH, rows * CELL_HEIGHT
    figure = new_figure(width, height)

    def axes(left, top, w, h):  # pixel box from the top-left corner
        return figure.add_axes((left / width, 1 - (top + h) / height, w / width, h / height))

    indices, scores = top_k(probabilities, k)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        left, top = (i % columns) * CELL_WIDTH, (i // columns) * CELL_HEIGHT
        picture = axes(left + (CELL_WIDTH - IMAGE_SIZE) // 2, top + 10, IMAGE_SIZE, IMAGE_SIZE)
        picture.imshow(image)
        picture.set_xticks([])
        picture.set_yticks([])
        truth = short_name(names[label]) if label >= 0 else "(unlabeled)"
        picture.set_xlabel(truth, fontsize=9, fontweight="bold")

        bars = axes(left + NAMES_WIDTH, top + IMAGE_SIZE + 40, CELL_WIDTH - NAMES_WIDTH - 15,
                    BAR_HEIGHT * len(indices[i]))
        colours = [TRUE_LABEL_COLOUR if c == label else BAR_COLOUR for c in indices[i]]
        # Not antialiased: each bar is a solid block of its colour, as long as its score.
        bars.barh(np.arange(len(indices[i])), scores[i], height=0.7, color=colours,
                  antialiased=False, linewidth=0)
        bars.set_xlim(0, 1)
        bars.set_ylim(len(indices[i]) - 0.5, -0.5)  # best on top
        bars.set_yticks(np.arange(len(indices[i])), [short_name(names[c]) for c in indices[i]],
                        fontsize=8)
        bars.set_xticks([])
        bars.tick_params(length=0)
        for spine in bars.spines.values():
            spine.set_visible(False)
    return figure


def write_predictions(model: keras.Model, data_dir: str | Path | DatasetInfo,
                      path: str | Path,
                      split: str = "validation", count: int = 8, start: int = 0,
                      columns: int = 4) -> Path:
    """Writes the top-5 picture for `count` images of `split`, from image `start` on."""
    data_dir = DatasetInfo.of(data_dir)
    contract = contract_of(model, data_dir)
    examples = load_examples(data_dir, split, contract, count, start)
    probabilities = predict(model, examples, contract)
    figure = draw_predictions(examples.images, probabilities, examples.labels,
                              contract.names, columns)
    return save_png(figure, path)
