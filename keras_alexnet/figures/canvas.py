"""Figures at an exact pixel size, written as PNG with matplotlib's Agg canvas."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 100


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure that saves as exactly `width_px` x `height_px` pixels."""
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")


def save_png(figure: Figure, path: str | Path) -> Path:
    """Writes the figure as PNG, creating parent directories; returns the path.

    No `bbox_inches="tight"`: the PNG keeps the figure's pixel size, so an axes'
    `get_window_extent()` is where it lies in the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def short_name(name: str, limit: int = 18) -> str:
    """A class name fit for a caption: its first synonym ("kit fox, Vulpes macrotis" ->
    "kit fox"), cut to `limit` characters."""
    name = name.split(",")[0].strip()
    return name if len(name) <= limit else name[:limit - 1] + "…"
