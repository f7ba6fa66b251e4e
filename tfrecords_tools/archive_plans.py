"""The splits of ILSVRC-style archives as plans: ILSVRC-2012 (or Kaggle's layout of
it), ILSVRC-2010 (its test ground truth and patch images), and a tar of per-class tars.

The train and val tars with a devkit need no index: the devkit gives the split's size
(so the default shard count) and the labels, and a seeded hash of each image's name
picks its shard, so the pass places every image the moment its header is read (a walk,
`walk`); completeness against the devkit is checked at the end of that pass.  Other
archives (an unlabelled test tar, a train tar without devkit counts) are indexed first
(headers only, front to back; cached) and checked before the pass.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfrecords_tools import ilsvrc2010, schema
from tfrecords_tools.archives import (
    Archives,
    Index,
    flat_members,
    label_train,
    label_validation,
    train_shortfall,
)
from tfrecords_tools.devkit import ClassIndex, Devkit, read_devkit
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.options import ConvertOptions
from tfrecords_tools.plan import (
    ShardPlan,
    SplitPlan,
    archive_identity,
    cached_index,
    check_patches,
    checked_num_shards,
    job_record,
    refuse_incomplete,
    refuse_short,
    shard_plan,
)


def plan_archives(archives: Archives, output: Path, options: ConvertOptions, progress: bool
                  ) -> list[SplitPlan]:
    """The plans of the archives' splits (`options.splits`, default those present)."""
    devkit = read_devkit(archives.devkit) if archives.devkit else None
    if archives.test_truth:
        if devkit is None:
            raise ArchiveError(f"{archives.test_truth}: labelling the test split needs the "
                               f"devkit ({ilsvrc2010.DEVKIT})")
        devkit = ilsvrc2010.read_test_truth(archives.test_truth, devkit)
    patches = ilsvrc2010.read_patches(archives.patches) if archives.patches else {}
    plans, classes = [], devkit.classes if devkit else None
    splits = options.splits or [s for s in schema.SPLITS if getattr(archives, s) is not None]
    if not splits:
        raise ArchiveError("no image archive given: every split of the Archives is None")
    for split in schema.SPLITS:
        if split in splits:
            path = archives.path_for(split)
            split_patches = patches.get(split, {})
            source = _sources(archives, split, path, devkit, split_patches)
            if devkit is not None and path.is_file() and (
                    split == "validation" or devkit.truth(split)
                    or (split == "train" and devkit.train_counts)):
                plans.append(_plan_walk(split, path, devkit, source, options, split_patches,
                                        archives.patches))
                continue
            plan = _plan_split(split, path, cached_index(output, split, path, progress),
                               devkit, source, classes, options, split_patches,
                               archives.patches)
            classes = plan.classes or classes
            plans.append(plan)
    return plans


def _plan_split(split: str, path: Path, index: Index, devkit: Devkit | None,
                source: dict, classes: ClassIndex | None, options: ConvertOptions,
                patches: dict[str, ilsvrc2010.Patch], patch_tar: Path | None) -> SplitPlan:
    """The split's shards, each with its members in their final order."""
    findings: dict = {}
    if split == "train":
        members, classes = label_train(path, index, devkit.classes if devkit else classes)
        short = train_shortfall(members, classes, devkit)
        if short or index.damage:
            if not options.allow_incomplete:
                refuse_short(path, short, classes, index.damage)
            findings["incomplete"] = {"damage": index.damage, "classes": short}
        if devkit and devkit.train_counts:
            findings["expected"] = {"class_counts": devkit.train_counts}
    elif split == "validation" or (devkit and devkit.truth(split)):
        if devkit is None:
            raise ArchiveError(f"{path}: labelling the validation split needs the devkit "
                               f"(ILSVRC2012_devkit_t12.tar.gz)")
        members, missing = label_validation(index, devkit, path, options.allow_incomplete, split)
        classes = devkit.classes
        if missing or index.damage:
            if not options.allow_incomplete:
                refuse_incomplete(path, "damaged", index.damage)
            findings["incomplete"] = {"damage": index.damage, "missing": [
                devkit.image_name(split, n) for n in missing]}
        findings["expected"] = {"images": len(devkit.truth(split))}
    else:
        members = flat_members(index)
        if index.damage:
            if not options.allow_incomplete:
                refuse_incomplete(path, "damaged", index.damage)
            findings["incomplete"] = {"damage": index.damage}
    if index.not_images:
        findings["not_images"] = index.not_images
    check_patches(path, patches, {m.name for m in members}, patch_tar,
                  options.allow_incomplete, findings)
    plan = shard_plan(split, path, members, classes, source, findings, options)
    return dataclasses.replace(plan, patches=patches, patch_tar=patch_tar)


def _sources(archives: Archives, split: str, path: Path, devkit: Devkit | None,
             patches: dict[str, ilsvrc2010.Patch]) -> dict:
    """The files a split's bytes come from, for its job record (an unlabelled test
    split's do not depend on the devkit)."""
    labelled = split != "test" or bool(devkit and devkit.truth(split))
    source = {"archive": archive_identity(path),
              "devkit": archive_identity(archives.devkit if labelled else None)}
    if split == "test" and labelled:
        source["ground_truth"] = archive_identity(archives.test_truth)
    if patches:
        source["patches"] = archive_identity(archives.patches)
    return source


def _plan_walk(split: str, path: Path, devkit: Devkit, source: dict, options: ConvertOptions,
               patches: dict[str, ilsvrc2010.Patch], patch_tar: Path | None) -> SplitPlan:
    """The plan of a train, val (or labelled test) tar read in one pass: its size from
    the devkit, each image's shard from its name as the pass reads it."""
    total = (sum(devkit.train_counts.values()) if split == "train"
             else len(devkit.truth(split)))
    num_shards = checked_num_shards(split, path, total, options)
    shards = tuple(ShardPlan(split, i, num_shards, ()) for i in range(num_shards))
    return SplitPlan(split, path, job_record(split, source, num_shards, options), shards,
                     devkit.classes, "train" if split == "train" else "flat", devkit, total,
                     patches, patch_tar)
