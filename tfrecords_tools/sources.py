"""What a path to convert holds: ILSVRC-2012 or ILSVRC-2010 archives, a tar of per-class
tars, or image folders.

- A directory with any of the ILSVRC-2012 archives (or Kaggle's layout of them), else
  with any of ILSVRC-2010's (`ilsvrc2010`): `archives.Archives`.
- A tar whose first member is a per-class `n########.tar` (ILSVRC's train tar, or
  ImageNet's Fall 2009 and Fall 2011 releases, without a devkit): `class_tars`, the
  classes being the inner tars' WNIDs, a validation split held out where asked.
- Anything else, a directory or a tar: image folders (`folders`).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from tfrecords_tools import ilsvrc2010
from tfrecords_tools.archives import Archives
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.class_tars import ClassTarSource
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.folders import FolderSource

_CLASS_TAR = re.compile(r"(\./)?n\d{8}\.tar")


def _first_member(path: Path) -> str:
    """The name of the tar's first member: one header read, at the start."""
    try:
        with tarfile.open(path, mode="r:") as archive:
            first = archive.next()
    except (tarfile.TarError, OSError) as error:
        raise ArchiveError(f"{path}: not a readable tar ({error}); give a directory of image "
                           f"folders or ILSVRC archives, or a tar of one") from error
    if first is None:
        raise ArchiveError(f"{path}: an empty tar")
    return first.name


def find_archives(directory: str | Path) -> Archives:
    """The ILSVRC-2012 archives in `directory` (or its Kaggle layout), else the
    ILSVRC-2010 ones; `Archives()` where it has neither."""
    archives = Archives.find(directory)  # a missing directory: the error names it
    return archives if archives != Archives() else ilsvrc2010.find(directory)


def find_source(path: str | Path, validation_fraction: float | None = None,
                classes: Path | None = None, *, validation_per_class: int | None = None,
                min_images_per_class: int | None = None
                ) -> Archives | ClassTarSource | FolderSource:
    """What `path` holds, ready to convert.  The hold-out options (`plan.HoldOut`) apply
    to image folders and to a tar of per-class tars, `classes` to image folders."""
    path = Path(path)
    hold_out = {"validation_fraction": validation_fraction,
                "validation_per_class": validation_per_class,
                "min_images_per_class": min_images_per_class}
    if path.is_file():
        if not _CLASS_TAR.fullmatch(_first_member(path)):
            return FolderSource(path, classes=classes, **hold_out)
        if classes is not None:
            raise ArgumentError(f"--classes: applies to image folders; {path} is a tar of "
                                f"per-class tars, whose classes are their WNIDs")
        return ClassTarSource(path, **hold_out)
    archives = find_archives(path)
    if archives == Archives():
        return FolderSource(path, classes=classes, **hold_out)
    for flag, value in (("--validation-fraction", validation_fraction),
                        ("--validation-per-class", validation_per_class),
                        ("--min-images-per-class", min_images_per_class),
                        ("--classes", classes)):
        if value is not None:
            raise ArgumentError(f"{flag}: applies to image folders and tars of per-class "
                                f"tars; {path} holds ILSVRC archives, whose classes and "
                                f"splits are their devkit's")
    return archives
