"""Version directories under an export base, as TF Serving lays them out:
`<export_base>/<model_name>/<version>/`, the version an integer.  Every exporter (the
SavedModel, `keras_alexnet.portable`) claims and writes its version here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from keras_alexnet.errors import AlexNetError
from serving.servables import version_numbers
from tfrecords_tools.base import storage


def next_version(model_dir: storage.PathOrUrl) -> int:
    """One more than the largest integer version directory (TF Serving skips other
    names); a half-written one counts too, so that its number is never reused."""
    return max(version_numbers(model_dir), default=0) + 1


def new_version_dir(export_base: str | os.PathLike, model_name: str,
                    version: int | None) -> storage.PathOrUrl:
    """The directory of a new version: `version`, or one more than the latest.  One that
    exists is refused (FileExistsError), so that nothing a server serves is overwritten."""
    model_dir = storage.path(export_base) / model_name
    version = next_version(model_dir) if version is None else int(version)
    if version < 0:
        raise AlexNetError(f"version must be a non-negative integer, got {version}")
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise FileExistsError(f"{version_dir} already exists; pick another --version")
    return version_dir


def write_version(version_dir: storage.PathOrUrl, write: Callable[[Path], None],
                  last: tuple[str, ...]) -> None:
    """Fills a new version with `write(directory)` and makes it appear whole, since a
    server polling the base path must never load a half-written one: locally in one
    rename of a staging directory beside it; on an object store, which has no directory
    rename, written locally and uploaded with the files in `last` (the model file) after
    the others (this package's server loads a version only once its model file is there;
    TF Serving retries a load that fails)."""
    if isinstance(version_dir, storage.Url):
        with tempfile.TemporaryDirectory(prefix="export-") as scratch:
            write(Path(scratch))
            storage.upload_tree(Path(scratch), version_dir, last=last)
        return
    staging = version_dir.parent / f".tmp-{version_dir.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
        staging.rename(version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
