"""A tar of per-class tars without a devkit, as ImageNet's full releases come: Fall 2009
(10,184 classes) and Fall 2011 (`fall11_whole.tar`, 21,841 classes, ImageNet-21K).

Its classes are the inner tars' WNIDs (sorted, label = index, named by WNID); it has no
validation split of its own, so one is held out (`plan.HoldOut`: a seeded fraction of
every class, or the first K of each as ImageNet-21K-P takes them), and classes of fewer
images than asked can be set aside, as ImageNet-21K-P sets aside those under 500.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.devkit import ClassIndex
from tfrecords_tools.members import Member
from tfrecords_tools.options import ConvertOptions
from tfrecords_tools.plan import (
    HeldOutSource,
    SplitPlan,
    archive_identity,
    cached_index,
    refuse_incomplete,
    shard_plan,
)


@dataclasses.dataclass(frozen=True)
class ClassTarSource(HeldOutSource):
    """A tar of per-class `n########.tar`s to convert, and how to hold out its
    validation split."""


def plan_class_tars(source: ClassTarSource, output: Path, options: ConvertOptions,
                    progress: bool) -> list[SplitPlan]:
    """The train split, and the validation split held out of it where asked."""
    path, hold_out = source.path, source.hold_out
    index = cached_index(output, "train", path, progress)  # headers only; cached
    findings: dict = {}
    if index.damage:
        if not options.allow_incomplete:
            refuse_incomplete(path, "damaged", index.damage)
        findings["incomplete"] = {"damage": index.damage}
    by_class: dict[str, list[tuple]] = collections.defaultdict(list)
    for wnid, name, offset, size, member_path in index.entries:  # in archive order
        by_class[wnid].append((name, offset, size, member_path))
    aside = hold_out.set_aside(by_class, str(path))
    if aside:
        findings["set_aside"] = aside
    wnids = tuple(sorted(by_class))
    classes = ClassIndex(wnids, wnids)
    members = {wnid: [Member(name, offset, size, label, member_path)
                      for name, offset, size, member_path in by_class[wnid]]
               for label, wnid in enumerate(wnids)}
    splits = {"train": [m for ms in members.values() for m in ms]}
    if hold_out.validation:
        splits["train"], splits["validation"] = hold_out.split(members, options.seed, str(path))
    absent = [split for split in options.splits or () if split not in splits]
    if absent:
        raise ArgumentError(f"--splits {absent[0]}: {path} has no {absent[0]} split (a tar "
                            f"of per-class tars has train; --validation-fraction or "
                            f"--validation-per-class holds out a validation split)")
    record = {"archive": archive_identity(path), "devkit": None, **hold_out.record()}
    return [shard_plan(split, path, splits[split], classes, record,
                       {**findings, **({"not_images": index.not_images}
                                       if split == "train" and index.not_images else {})},
                       options)
            for split in options.splits or list(splits)]
