"""The first convolutional layer's kernels as colour tiles [paper §6.1, Figure 3].

The paper shows 96 kernels of 11x11x3: the 48 of GPU 1 (tower a) above the 48 of
GPU 2 (tower b), where tower a's became largely colour-agnostic and tower b's
colour-specific.  A reduced model shows its fewer kernels in the same layout.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
from matplotlib import image as mpimage

from keras_alexnet.errors import AlexNetError
from keras_alexnet.model import TOWERS

BACKGROUND = 255  # white gaps between tiles, as in the paper's figure


def conv1_kernels(model: keras.Model) -> np.ndarray:
    """The conv1 kernels as (towers, kernels per tower, 11, 11, 3), tower a first."""
    kernels = []
    for tower in TOWERS:
        kernel = model.get_layer(f"{tower}_conv1").layer.kernel.numpy()  # (h, w, 3, n)
        kernels.append(np.moveaxis(kernel, -1, 0))
    return np.stack(kernels)


@dataclasses.dataclass(frozen=True)
class KernelGridLayout:
    """Where each kernel's tile lies in the grid picture, in pixels."""

    kernels_per_tower: int
    kernel_size: int = 11
    columns: int = 16  # 48 kernels per tower -> 3 rows of 16
    scale: int = 4  # each kernel pixel becomes scale x scale picture pixels
    gap: int = 2
    tower_gap: int = 8  # extra space between tower a's rows and tower b's

    @property
    def tile(self) -> int:
        return self.kernel_size * self.scale

    @property
    def rows_per_tower(self) -> int:
        return -(-self.kernels_per_tower // self.columns)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        columns = min(self.columns, self.kernels_per_tower)
        rows = len(TOWERS) * self.rows_per_tower
        return (self.gap + rows * (self.tile + self.gap) + self.tower_gap,
                self.gap + columns * (self.tile + self.gap))

    def box(self, tower: int, index: int) -> tuple[int, int]:
        """(top, left) corner of kernel `index` of tower `tower` (0 = a, 1 = b)."""
        row = tower * self.rows_per_tower + index // self.columns
        column = index % self.columns
        return (self.gap + row * (self.tile + self.gap) + tower * self.tower_gap,
                self.gap + column * (self.tile + self.gap))


def normalize_kernel(kernel: np.ndarray) -> np.ndarray:
    """One kernel stretched to 0-255 uint8 on its own range.

    Per-kernel contrast shows each kernel's pattern whatever its norm; a constant
    kernel is drawn mid-grey.
    """
    low, high = float(kernel.min()), float(kernel.max())
    if high - low <= 0:
        return np.full(kernel.shape, 128, np.uint8)
    return np.round((kernel - low) / (high - low) * 255).astype(np.uint8)


def kernel_grid(kernels: np.ndarray, columns: int = 16, scale: int = 4) -> np.ndarray:
    """(towers, n, k, k, 3) kernels -> an RGB uint8 picture, one row block per tower."""
    if kernels.ndim != 5 or kernels.shape[0] != len(TOWERS) or kernels.shape[-1] != 3:
        raise AlexNetError(f"kernels must have shape (2, n, k, k, 3), got {kernels.shape}")
    if columns < 1 or scale < 1:
        raise AlexNetError(f"columns and scale must be positive, got {columns} and {scale}")
    layout = KernelGridLayout(kernels.shape[1], kernels.shape[2], columns, scale)
    picture = np.full((*layout.shape, 3), BACKGROUND, np.uint8)
    for tower, tower_kernels in enumerate(kernels):
        for index, kernel in enumerate(tower_kernels):
            top, left = layout.box(tower, index)
            tile = np.kron(normalize_kernel(kernel), np.ones((scale, scale, 1), np.uint8))
            picture[top:top + layout.tile, left:left + layout.tile] = tile
    return picture


def write_kernels(model: keras.Model, path: str | Path, columns: int = 16,
                  scale: int = 4) -> Path:
    """Writes the conv1 kernel grid of `model` as a PNG [paper Figure 3]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Pixel-exact: the grid is the picture, with no resampling by a figure.
    mpimage.imsave(path, kernel_grid(conv1_kernels(model), columns, scale), format="png")
    return path
