"""A conversion's plan: what each split's shards hold, and what their bytes depend on.

Sources (`archive_plans` for ILSVRC-style archives, `folders` for image folders) make a
`SplitPlan` per split; the passes (`passes`) and the shard writer (`shards`) carry it
out, whatever the source.  A plan depends only on the source and the `ConvertOptions`
of "what to write", never on the number of processes or machines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import random
from pathlib import Path

from tfrecords_tools import __version__, ilsvrc2010, manifest, schema, shuffle
from tfrecords_tools.archives import Index, index_flat, index_train, index_tree
from tfrecords_tools.base import files
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.devkit import ClassIndex, Devkit
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.images import CODEC
from tfrecords_tools.members import Member
from tfrecords_tools.options import ConvertOptions

INDEX_VERSION = 2  # of the cached index's format


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    num_shards: int
    members: tuple[Member, ...]

    @property
    def name(self) -> str:
        return schema.shard_name(self.split, self.index, self.num_shards)


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    split: str
    archive: Path
    job: dict  # what the split's bytes depend on, and what indexing found
    shards: tuple[ShardPlan, ...]
    classes: ClassIndex | None
    #: "train" or "flat" where the archive is read in one pass with no index (the shards'
    #: members are then known only after it, and `job` gets the findings then), else ""
    walk: str = ""
    devkit: Devkit | None = None
    expected: int = 0  # the images the devkit lists (a walk's progress)
    #: base name -> its replacement image (ILSVRC-2010's patch_images.tar, `patch_tar`)
    patches: dict[str, ilsvrc2010.Patch] = dataclasses.field(default_factory=dict)
    patch_tar: Path | None = None

    @property
    def job_id(self) -> str:
        return manifest.job_id(self.job)

    @property
    def pass_id(self) -> str:
        """The job as known before the pass: without what the pass finds."""
        return manifest.job_id(before_pass(self.job)) if self.walk else self.job_id


def before_pass(job: dict) -> dict:
    return {k: v for k, v in job.items() if k not in manifest.FINDINGS and k != "images"}


def archive_identity(path: Path | None) -> dict | None:
    # Name and size, not the full path: machines of one job may mount the archives anywhere.
    if path is None:
        return None
    return {"name": path.name, "bytes": None if path.is_dir() else path.stat().st_size}


def cached_index(output: Path, split: str, path: Path, progress: bool) -> Index:
    """The archive's index, from the cache while the archive's size and mtime hold.

    Indexed with `allow_incomplete`, so that damage is reported together with what it
    costs (the classes it leaves short); the source's planner decides whether that is an
    error.
    """
    def build() -> Index:
        if split == "train":
            return index_train(path, progress, allow_incomplete=True)
        if split == "folders":
            return index_tree(path, allow_incomplete=True)
        return index_flat(path, allow_incomplete=True)

    if path.is_dir():  # a directory's mtime misses its files' changes
        return build()
    stat = path.stat()
    key = {"version": INDEX_VERSION, "archive": str(path.resolve()), "bytes": stat.st_size,
           "mtime_ns": stat.st_mtime_ns}
    cache = manifest.state_dir(output) / f"{split}.index.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            return Index([tuple(e) for e in cached["entries"]], cached["not_images"],
                         cached["damage"], cached["directories"])
    index = build()
    files.write_atomically(cache, json.dumps(
        {"key": key, "entries": index.entries, "not_images": index.not_images,
         "damage": index.damage, "directories": index.directories}, separators=(",", ":")))
    return index


def refuse_incomplete(path: Path, what: str, damage: str) -> None:
    raise ArchiveError(f"{path}: {what}{'; ' + damage if damage else ''}. Download the "
                       f"archive again, or pass --allow-incomplete to convert what is there "
                       f"(the shortfall is then recorded in {schema.MANIFEST})")


def refuse_short(path: Path, short: dict[str, list[int]], classes: ClassIndex,
                  damage: str) -> None:
    """The error of a train tar whose classes are short of the devkit's counts."""
    counts = ", ".join(f"{w} has {n} of {e}" for w, (n, e) in list(short.items())[:5])
    what = (f"{len(short)} of the {len(classes.wnids)} classes are missing or short of the "
            f"devkit's num_train_images ({counts}{', ...' if len(short) > 5 else ''})"
            if short else "damaged")
    refuse_incomplete(path, what, damage)


def check_patches(path: Path, patches: dict[str, ilsvrc2010.Patch], found: set[str],
                   patch_tar: Path | None, allow_incomplete: bool, findings: dict) -> None:
    """Every replacement image of the split replaces an image of its archive: an error
    naming the first that does not, unless `allow_incomplete` (then recorded)."""
    unused = sorted(patches[name].member for name in set(patches) - found)
    if not unused:
        return
    if not allow_incomplete:
        raise ArchiveError(f"{patch_tar}: member {unused[0]} replaces no image of {path} "
                           f"({len(unused)} such members); is it the patch tar of these "
                           f"archives? Pass --allow-incomplete to convert without them")
    findings.setdefault("incomplete", {"damage": ""})["unused_patches"] = unused


def job_record(split: str, source: dict, num_shards: int, options: ConvertOptions) -> dict:
    """What a split's bytes depend on: its source's files and the options of what to
    write, the converter's version, codec and shard plan."""
    return {"split": split, **source, "num_shards": num_shards, "size": options.size,
            "crop": options.crop, "quality": options.quality, "seed": options.seed,
            "label_offset": options.label_offset, "version": __version__, "codec": CODEC,
            "plan": shuffle.PLAN}


def checked_num_shards(split: str, path: Path, images: int, options: ConvertOptions) -> int:
    """The split's shard count: asked for, else `schema.default_num_shards`; between 1
    and its images."""
    num_shards = options.num_shards(split) or schema.default_num_shards(split, images)
    if not 1 <= num_shards <= images:
        raise ArgumentError(f"--{split}-shards {num_shards}: must be between 1 and the "
                            f"{images} images of {path}")
    return num_shards


def shard_plan(split: str, path: Path, members: list[Member], classes: ClassIndex | None,
               source: dict, findings: dict, options: ConvertOptions) -> SplitPlan:
    """The split's shards, each with its members in their final order, whatever the
    source: `source` and `findings` go into the job record as they are."""
    members = sorted(members, key=lambda m: m.name)
    for previous, member in itertools.pairwise(members):
        if previous.name == member.name:
            raise ArchiveError(f"{path}: member {member.name} appears more than once")
    num_shards = checked_num_shards(split, path, len(members), options)
    by_shard: list[list[Member]] = [[] for _ in range(num_shards)]
    for member in members:
        by_shard[shuffle.shard_of(shuffle.key_hash(split, options.seed, member.name),
                                  num_shards)].append(member)
    shards = []
    for i, shard_members in enumerate(by_shard):
        by_name = {member.name: member for member in shard_members}
        shards.append(ShardPlan(split, i, num_shards, tuple(
            by_name[name] for name in shuffle.in_shard_order(split, options.seed,
                                                             list(by_name)))))
    job = {**job_record(split, source, num_shards, options), "images": len(members)}
    return SplitPlan(split, path, {**job, **findings}, tuple(shards), classes)


@dataclasses.dataclass(frozen=True)
class HoldOut:
    """How a source without a validation split of its own makes one (image folders
    `root/<class>/`, a tar of per-class tars), and which classes it keeps.

    `fraction` F: round(F x n) of each class's n images, at least one and never all, drawn
    with the seed (the class's images sorted by name, then shuffled; each class alone,
    so adding a class leaves the others' split as it was).  `per_class` K: the first K of
    each class in the source's order, as ImageNet-21K-P holds out its first 50 (Ridnik
    et al. 2021).  `min_images` N: classes of fewer images are set aside, not converted,
    and listed with their counts in manifest.json."""

    fraction: float | None = None
    per_class: int | None = None
    min_images: int | None = None

    def __post_init__(self) -> None:
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ArgumentError(f"--validation-fraction {self.fraction}: must be between 0 "
                                f"and 1 (e.g. 0.1 holds out a tenth of every class)")
        if self.fraction is not None and self.per_class is not None:
            raise ArgumentError("--validation-fraction and --validation-per-class: give one")
        for flag, value in (("--validation-per-class", self.per_class),
                            ("--min-images-per-class", self.min_images)):
            if value is not None and value < 1:
                raise ArgumentError(f"{flag} {value}: must be at least 1")

    @property
    def validation(self) -> bool:
        """Whether a validation split is held out."""
        return self.fraction is not None or self.per_class is not None

    def record(self) -> dict:
        """The job record's fields for what is set (none: the record of no hold-out)."""
        return {key: value for key, value in (
            ("validation_fraction", self.fraction), ("validation_per_class", self.per_class),
            ("min_images_per_class", self.min_images)) if value is not None}

    def set_aside(self, by_class: dict[str, list], where: str) -> dict[str, int]:
        """The classes of `by_class` (removed from it) with fewer than `min_images`
        images, and their counts."""
        if self.min_images is None:
            return {}
        aside = {name: len(items) for name, items in sorted(by_class.items())
                 if len(items) < self.min_images}
        if len(aside) >= len(by_class) - 1:
            largest = max(map(len, by_class.values()), default=0)
            raise ArgumentError(f"--min-images-per-class {self.min_images}: leaves "
                                f"{len(by_class) - len(aside)} of the {len(by_class)} classes "
                                f"of {where} (the largest has {largest} images); a "
                                f"classifier needs at least two")
        for name in aside:
            del by_class[name]
        return aside

    def split(self, by_class: dict[str, list[Member]], seed: int, where: str
              ) -> tuple[list[Member], list[Member]]:
        """(train, validation) of the members of each class (in the source's order)."""
        train, validation = [], []
        for name, members in sorted(by_class.items()):
            if self.per_class is not None:
                if len(members) <= self.per_class:
                    raise ArgumentError(
                        f"--validation-per-class {self.per_class}: class {name} of {where} "
                        f"has {len(members)} images, none left to train on; lower K or set "
                        f"such classes aside with --min-images-per-class {self.per_class + 1}")
                held = self.per_class
            else:
                members = sorted(members, key=lambda m: m.name)
                # The string seed hashes the same in every run.
                random.Random(f"validation-fraction:{seed}:{name}").shuffle(members)
                held = min(len(members) - 1,
                           max(1, math.floor(self.fraction * len(members) + 0.5)))
            validation += members[:held]
            train += members[held:]
        return train, validation


@dataclasses.dataclass(frozen=True)
class HeldOutSource:
    """A source whose validation split, if any, is held out of its classes: its path
    and the `HoldOut` fields, by their flags' names (checked on creation)."""

    path: Path
    validation_fraction: float | None = None
    validation_per_class: int | None = None
    min_images_per_class: int | None = None

    def __post_init__(self) -> None:
        self.hold_out  # noqa: B018 (checks the options now, naming the flag)

    @property
    def hold_out(self) -> HoldOut:
        return HoldOut(self.validation_fraction, self.validation_per_class,
                       self.min_images_per_class)
