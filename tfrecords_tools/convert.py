"""ILSVRC archives (2012, 2010) to sharded TFRecords: one forward pass per archive,
deterministic, parallel, resumable.

How a run goes, per split:
1. Plan.  The ILSVRC train and val tars with a devkit need no index: the devkit gives
   the split's size (so the default shard count) and the labels, and a seeded hash of
   each image's name picks its shard (`shuffle`), so the pass places every image the
   moment its header is read (`walk`); completeness against the devkit (every class has
   meta.mat's `num_train_images`, every ground-truth line its val image) is checked at
   the end of the pass, with the same errors, and the job record then gets what the
   pass found; ILSVRC-2010's test tar with its released ground truth is read as the val
   tar.  Other sources (an unlabelled test tar, a train tar without devkit counts, the
   Kaggle layout, folders) are indexed first (headers only, front to back; cached in
   `.convert/` while the archive's size and mtime stay) and checked before the pass.
   The plan, and so every shard's bytes, depends only on the archives and the
   arguments, never on the number of processes or machines.
2. Forward pass: this process reads the archive front to back, a few MB at a time,
   into a buffer shared with the worker processes; the workers turn each image into
   its finished record and append it to the bucket file of its shard
   (`.convert/buckets/`, one O_APPEND write per shard and batch), so this process never
   handles a record.  Every `checkpoint_seconds` (at the next cut between top-level
   members, in a walk) the batches in flight finish, the buckets are synced and their
   lengths recorded (`.convert/<split>.pass.*.json`, with a walk's offset and findings so
   far); a rerun truncates the buckets back to that record and reads on from there.
   The shard shuffle never becomes the read order: on a disk, a NAS or a network mount
   every backward jump is a seek.
3. Shards: a worker reads a complete bucket, puts its records in the shard's order (by
   their names' hash), writes `.<shard>.tmp` and renames it; then a receipt
   (`manifest.py`) is written.  A name that comes twice is an error here.
4. Merge: once every shard of a split has a receipt, `manifest.json` is written.

A rerun keeps the shards whose receipt matches the job and the file's size and mtime,
so a crash or `kill -9` at any moment costs at most the work since the last
checkpoint.  With `num_workers` K and `worker_index` I, this machine converts every
K-th shard from I (reading the whole archive, converting only its shards' images);
any machine then merges.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import itertools
import json
import multiprocessing
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from tfrecords_tools import __version__, ilsvrc2010, manifest, schema, shuffle, walk, worker
from tfrecords_tools.archives import (
    Archives,
    ClassIndex,
    Devkit,
    Index,
    flat_members,
    index_flat,
    index_train,
    index_tree,
    label_train,
    label_validation,
    numbered_wnid,
    read_devkit,
    refuse_missing,
    train_shortfall,
    unnumbered_reason,
)
from tfrecords_tools.base import files, words
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.errors import ArchiveError, OutputError, WorkerError
from tfrecords_tools.folders import FolderSource, parse_class_file, split_folders
from tfrecords_tools.images import CODEC, ImageOptions
from tfrecords_tools.members import Member
from tfrecords_tools.pool import InlinePool, Pool
from tfrecords_tools.sources import find_source

CHUNK = 32  # images per worker task: few enough messages, small enough to keep all busy
SLOT_BYTES = 4 << 20  # archive bytes read at once into one slot of the shared buffer
CHECKPOINT_SECONDS = 30.0  # at most this much forward-pass work is lost to a kill
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
        return manifest.job_id(_before_pass(self.job)) if self.walk else self.job_id


def _before_pass(job: dict) -> dict:
    return {k: v for k, v in job.items() if k not in manifest.FINDINGS and k != "images"}


@dataclasses.dataclass
class Summary:
    """What a run did, per split, and where it went."""

    output: Path | None = None
    images: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    repaired: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    replaced: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shards_written: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shards_kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    incomplete: list[str] = dataclasses.field(default_factory=list)
    splits: list[str] = dataclasses.field(default_factory=list)
    merged: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"{'split':<12}{'images':>10}{'skipped':>9}{'repaired':>10}"
                 f"{'shards written':>16}{'shards kept':>13}"]
        for split in self.splits:
            lines.append(f"{split:<12}{self.images[split]:>10}{self.skipped[split]:>9}"
                         f"{self.repaired[split]:>10}{self.shards_written[split]:>16}"
                         f"{self.shards_kept[split]:>13}")
        total = sum(self.images.values())
        rate = total / self.seconds if self.seconds else 0.0
        lines.append(f"{words.count(total, 'image')} in {self.seconds:.1f} s ({rate:.0f} "
                     f"images/s) into {self.output}; manifest written for: "
                     f"{', '.join(self.merged) or 'none yet'}")
        if self.replaced:
            lines.append("images replaced from the patch tar: " + ", ".join(
                f"{split} {self.replaced[split]}" for split in self.splits
                if self.replaced[split]))
        lines += [f"INCOMPLETE (--allow-incomplete): {note}" for note in self.incomplete]
        return "\n".join(lines)


def _archive_identity(path: Path | None) -> dict | None:
    # Name and size, not the full path: machines of one job may mount the archives anywhere.
    if path is None:
        return None
    return {"name": path.name, "bytes": None if path.is_dir() else path.stat().st_size}


# --- planning ------------------------------------------------------------------------------

def _index(output: Path, split: str, path: Path, progress: bool) -> Index:
    """The archive's index, from the cache while the archive's size and mtime hold.

    Indexed with `allow_incomplete`, so that damage is reported together with what it
    costs (the classes it leaves short); `_plan_split` decides whether that is an error.
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


def _refuse_incomplete(path: Path, what: str, damage: str) -> None:
    raise ArchiveError(f"{path}: {what}{'; ' + damage if damage else ''}. Download the "
                       f"archive again, or pass --allow-incomplete to convert what is there "
                       f"(the shortfall is then recorded in {schema.MANIFEST})")


def _refuse_short(path: Path, short: dict[str, list[int]], classes: ClassIndex,
                  damage: str) -> None:
    """The error of a train tar whose classes are short of the devkit's counts."""
    counts = ", ".join(f"{w} has {n} of {e}" for w, (n, e) in list(short.items())[:5])
    what = (f"{len(short)} of the {len(classes.wnids)} classes are missing or short of the "
            f"devkit's num_train_images ({counts}{', ...' if len(short) > 5 else ''})"
            if short else "damaged")
    _refuse_incomplete(path, what, damage)


def _plan_split(split: str, path: Path, index: Index, devkit: Devkit | None,
                source: dict, classes: ClassIndex | None, num_shards: int | None,
                options: ImageOptions, seed: int, label_offset: int,
                allow_incomplete: bool, patches: dict[str, ilsvrc2010.Patch],
                patch_tar: Path | None) -> SplitPlan:
    """The split's shards, each with its members in their final order."""
    findings: dict = {}
    if split == "train":
        members, classes = label_train(path, index, devkit.classes if devkit else classes)
        short = train_shortfall(members, classes, devkit)
        if short or index.damage:
            if not allow_incomplete:
                _refuse_short(path, short, classes, index.damage)
            findings["incomplete"] = {"damage": index.damage, "classes": short}
        if devkit and devkit.train_counts:
            findings["expected"] = {"class_counts": devkit.train_counts}
    elif split == "validation" or (devkit and devkit.truth(split)):
        if devkit is None:
            raise ArchiveError(f"{path}: labelling the validation split needs the devkit "
                               f"(ILSVRC2012_devkit_t12.tar.gz)")
        members, missing = label_validation(index, devkit, path, allow_incomplete, split)
        classes = devkit.classes
        if missing or index.damage:
            if not allow_incomplete:
                _refuse_incomplete(path, "damaged", index.damage)
            findings["incomplete"] = {"damage": index.damage, "missing": [
                devkit.image_name(split, n) for n in missing]}
        findings["expected"] = {"images": len(devkit.truth(split))}
    else:
        members = flat_members(index)
        if index.damage:
            if not allow_incomplete:
                _refuse_incomplete(path, "damaged", index.damage)
            findings["incomplete"] = {"damage": index.damage}
    if index.not_images:
        findings["not_images"] = index.not_images
    _check_patches(path, patches, {m.name for m in members}, patch_tar, allow_incomplete,
                   findings)
    plan = _shard_plan(split, path, members, classes, source, findings, num_shards, options,
                       seed, label_offset)
    return dataclasses.replace(plan, patches=patches, patch_tar=patch_tar)


def _sources(archives: Archives, split: str, path: Path, devkit: Devkit | None,
             patches: dict[str, ilsvrc2010.Patch]) -> dict:
    """The files a split's bytes come from, for its job record (an unlabelled test
    split's do not depend on the devkit)."""
    labelled = split != "test" or bool(devkit and devkit.truth(split))
    source = {"archive": _archive_identity(path),
              "devkit": _archive_identity(archives.devkit if labelled else None)}
    if split == "test" and labelled:
        source["ground_truth"] = _archive_identity(archives.test_truth)
    if patches:
        source["patches"] = _archive_identity(archives.patches)
    return source


def _check_patches(path: Path, patches: dict[str, ilsvrc2010.Patch], found: set[str],
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


def _shard_plan(split: str, path: Path, members: list[Member], classes: ClassIndex | None,
                source: dict, findings: dict, num_shards: int | None, options: ImageOptions,
                seed: int, label_offset: int) -> SplitPlan:
    """The split's shards, each with its members in their final order, whatever the
    source: `source` and `findings` go into the job record as they are."""
    members = sorted(members, key=lambda m: m.name)
    for previous, member in itertools.pairwise(members):
        if previous.name == member.name:
            raise ArchiveError(f"{path}: member {member.name} appears more than once")
    num_shards = num_shards or schema.default_num_shards(split, len(members))
    if not 1 <= num_shards <= len(members):
        raise ArgumentError(f"--{split}-shards {num_shards}: must be between 1 and the "
                            f"{len(members)} images of {path}")
    by_shard: list[list[Member]] = [[] for _ in range(num_shards)]
    for member in members:
        by_shard[shuffle.shard_of(shuffle.key_hash(split, seed, member.name), num_shards)
                 ].append(member)
    shards = []
    for i, shard_members in enumerate(by_shard):
        by_name = {member.name: member for member in shard_members}
        shards.append(ShardPlan(split, i, num_shards, tuple(
            by_name[name] for name in shuffle.in_shard_order(split, seed, list(by_name)))))
    job = {"split": split, **source, "num_shards": num_shards, "images": len(members),
           "size": options.size, "crop": options.crop, "quality": options.quality,
           "seed": seed, "label_offset": label_offset, "version": __version__, "codec": CODEC,
           "plan": shuffle.PLAN}
    return SplitPlan(split, path, {**job, **findings}, tuple(shards), classes)


def _plan_folders(output: Path, source: FolderSource, splits: Sequence[str] | None,
                  num_shards: dict[str, int], options: ImageOptions, seed: int,
                  label_offset: int, allow_incomplete: bool, progress: bool
                  ) -> list[SplitPlan]:
    """The plans of a folder dataset's splits (`splits`, default all it has)."""
    index = _index(output, "folders", source.path, progress)
    if index.damage and not allow_incomplete:
        _refuse_incomplete(source.path, "damaged", index.damage)
    class_file = (parse_class_file(source.classes.read_text(encoding="utf-8"), source.classes)
                  if source.classes else None)
    found = split_folders(index, source, seed, class_file)
    absent = [split for split in splits or () if split not in found.members]
    if absent:
        raise ArgumentError(f"--splits {absent[0]}: {source.path} has no {absent[0]} split "
                            f"(it has {', '.join(found.splits)})")
    held_out = {"validation_fraction": source.validation_fraction}
    plans = []
    for split in splits or found.splits:
        findings = {"incomplete": {"damage": index.damage}} if index.damage else {}
        if found.not_images.get(split):
            findings["not_images"] = found.not_images[split]
        plans.append(_shard_plan(
            split, source.path, found.members[split], found.classes,
            {"archive": _archive_identity(source.path), "devkit": None,
             **(held_out if source.validation_fraction and split != "test" else {})},
            findings, num_shards.get(split), options, seed, label_offset))
    return plans


def _plan_walk(split: str, path: Path, devkit: Devkit, source: dict, num_shards: int | None,
               options: ImageOptions, seed: int, label_offset: int,
               patches: dict[str, ilsvrc2010.Patch], patch_tar: Path | None) -> SplitPlan:
    """The plan of a train, val (or labelled test) tar read in one pass: its size from
    the devkit, each image's shard from its name as the pass reads it."""
    total = (sum(devkit.train_counts.values()) if split == "train"
             else len(devkit.truth(split)))
    num_shards = num_shards or schema.default_num_shards(split, total)
    if not 1 <= num_shards <= total:
        raise ArgumentError(f"--{split}-shards {num_shards}: must be between 1 and the "
                            f"{total} images of {path}")
    job = {"split": split, **source, "num_shards": num_shards,
           "size": options.size, "crop": options.crop, "quality": options.quality,
           "seed": seed, "label_offset": label_offset, "version": __version__, "codec": CODEC,
           "plan": shuffle.PLAN}
    shards = tuple(ShardPlan(split, i, num_shards, ()) for i in range(num_shards))
    return SplitPlan(split, path, job, shards, devkit.classes,
                     "train" if split == "train" else "flat", devkit, total, patches, patch_tar)


def _plan_archives(output: Path, archives: Archives, splits: Sequence[str] | None,
                   num_shards: dict[str, int], options: ImageOptions, seed: int,
                   label_offset: int, allow_incomplete: bool, progress: bool
                   ) -> tuple[list[SplitPlan], ClassIndex | None]:
    """The plans of the ILSVRC archives' splits (`splits`, default those present)."""
    devkit = read_devkit(archives.devkit) if archives.devkit else None
    if archives.test_truth:
        if devkit is None:
            raise ArchiveError(f"{archives.test_truth}: labelling the test split needs the "
                               f"devkit ({ilsvrc2010.DEVKIT})")
        devkit = ilsvrc2010.read_test_truth(archives.test_truth, devkit)
    patches = ilsvrc2010.read_patches(archives.patches) if archives.patches else {}
    plans, classes = [], devkit.classes if devkit else None
    splits = splits or [s for s in schema.SPLITS if getattr(archives, s) is not None]
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
                plans.append(_plan_walk(split, path, devkit, source, num_shards.get(split),
                                        options, seed, label_offset, split_patches,
                                        archives.patches))
                continue
            plan = _plan_split(split, path, _index(output, split, path, progress),
                               devkit, source, classes, num_shards.get(split),
                               options, seed, label_offset, allow_incomplete, split_patches,
                               archives.patches)
            classes = plan.classes or classes
            plans.append(plan)
    return plans, classes


def _claim_output(output: Path, plan: SplitPlan, allow_incomplete: bool = False) -> None:
    """Refuses a directory that holds this split's shards from another conversion, or
    other splits written with another label offset."""
    for split in schema.SPLITS:
        other = manifest.job_path(output, split)
        if split != plan.split and other.exists():
            theirs = json.loads(other.read_text()).get("label_offset", 0)
            if theirs != plan.job["label_offset"]:
                raise OutputError(f"{output} holds {split} shards with --label-offset {theirs}; "
                                  f"convert {plan.split} with the same offset, or into another "
                                  f"directory")
    job_path = manifest.job_path(output, plan.split)
    if job_path.exists():
        theirs = json.loads(job_path.read_text())
        if plan.walk and _before_pass(theirs) == plan.job:
            # A finished pass's record: its findings are those of this archive (unless
            # they must be found again to refuse them).
            if "images" in theirs and ("incomplete" not in theirs or allow_incomplete):
                plan.job.update(theirs)
            return
        if theirs != plan.job:
            differences = ", ".join(_differences(theirs, plan.job))
            raise OutputError(f"{output} holds {plan.split} shards of another conversion "
                              f"({differences or 'the archive changed'}); choose another output "
                              f"directory or remove them")
        return
    strangers = sorted(output.glob(schema.shard_pattern(plan.split)))
    if strangers:
        raise OutputError(f"{output} holds {plan.split} shards this converter has no record "
                          f"of (e.g. {strangers[0].name}); choose another output directory or "
                          f"remove them")
    files.write_atomically(job_path, json.dumps(plan.job, indent=1, sort_keys=True))


def _claim_labels(output: Path, classes: ClassIndex) -> None:
    path = output / schema.LABELS
    if path.exists():
        if path.read_text(encoding="utf-8") != classes.labels_txt():
            raise OutputError(f"{path} lists other classes than these archives; choose "
                              f"another output directory")
    else:
        files.write_atomically(path, classes.labels_txt())


# --- the forward pass -------------------------------------------------------------------



@contextlib.contextmanager
def _writing(directory: Path):
    """The forward pass's output errors (a full disk), worded; reading errors pass."""
    try:
        yield
    except OSError as error:
        raise OutputError(f"writing in {directory}: {error}; rerun the same command to "
                          f"resume from the last checkpoint after fixing this (a full "
                          f"disk?)") from error


class _Buckets:
    """Each shard's entries, appended by the workers to `.convert/buckets/<shard>`.

    At a checkpoint no batch is in flight, so the files' sizes are a consistent cut: a
    rerun truncates them back to it and continues from the same archive position."""

    def __init__(self, directory: Path, sizes: dict[str, int]):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.touched: set[str] = set()
        for name, size in sizes.items():  # back to the last checkpoint
            with open(self.path(name), "ab") as handle:
                handle.truncate(size)
        self.sizes = dict(sizes)

    def path(self, shard: str) -> Path:
        return self.directory / shard

    def sync(self) -> dict[str, int]:
        """Fsyncs every bucket written since the last call (no batch in flight);
        every bucket's size."""
        with _writing(self.directory):
            for shard in sorted(self.touched):
                descriptor = os.open(self.path(shard), os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                    self.sizes[shard] = os.fstat(descriptor).st_size
                finally:
                    os.close(descriptor)
        self.touched.clear()
        return dict(self.sizes)


def _pass_path(output: Path, split: str, num_workers: int, worker_index: int) -> Path:
    return manifest.state_dir(output) / f"{split}.pass.{worker_index}-of-{num_workers}.json"


def _start_pass(output: Path, plan: SplitPlan, todo: list[ShardPlan], state_path: Path
                ) -> tuple[list[ShardPlan], int, dict[str, int]]:
    """The shards of this forward pass, where it starts, and the buckets' sizes there:
    the recorded pass if one matches (and its buckets hold what it says), else a new
    pass over `todo` from the start."""
    buckets = manifest.state_dir(output) / "buckets"
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(state_path.read_text())
        by_name = {shard.name: shard for shard in plan.shards}
        sizes = state["bucket_bytes"]
        if (state["job"] == plan.job_id and {s.name for s in todo} <= set(state["shards"])
                and all((buckets / name).stat().st_size >= size
                        for name, size in sizes.items())):
            return [by_name[name] for name in state["shards"]], state["position"], sizes
    for shard in todo:
        (buckets / shard.name).unlink(missing_ok=True)
    return todo, 0, {}


def _save_pass(state_path: Path, plan: SplitPlan, shards: list[ShardPlan], position: int,
               sizes: dict[str, int]) -> None:
    with _writing(state_path.parent):
        files.write_atomically(state_path, json.dumps(
            {"job": plan.job_id, "shards": [s.name for s in shards], "position": position,
             "bucket_bytes": sizes}))


def _read_span(descriptor: int, view: memoryview, offset: int) -> None:
    while len(view):
        count = os.preadv(descriptor, [view], offset)
        if count == 0:
            raise ArchiveError(f"archive ended at byte {offset}: did it change during the run?")
        view, offset = view[count:], offset + count


def _batches(order: list[tuple], start: int):
    """Runs of consecutive members in archive order: at most CHUNK images and SLOT_BYTES
    of the archive each (one larger member alone)."""
    position = start
    while position < len(order):
        first = order[position][3]
        end = position + 1
        span_end = first.offset + first.size
        while end < len(order) and end - position < CHUNK:
            member = order[end][3]
            if max(span_end, member.offset + member.size) - first.offset > SLOT_BYTES:
                break
            span_end = max(span_end, member.offset + member.size)
            end += 1
        yield position, end, first.offset, span_end
        position = end


def _differences(theirs: dict, ours: dict) -> list[str]:
    """How a recorded conversion's job differs from this one's, key by key (a nested
    record, as the archive's, by its own keys)."""
    found = []
    for key, value in ours.items():
        old = theirs.get(key)
        if key in manifest.FINDINGS or old == value:
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            found += [f"{key} {part}: {old.get(part)!r} there, {value.get(part)!r} here"
                      for part in sorted(set(old) | set(value)) if old.get(part) != value.get(part)]
        else:
            found.append(f"{key}: {old!r} there, {value!r} here")
    return found


def _count_batch(pool, ticket, bucket_dir: str, summary: Summary, split: str) -> None:
    """Waits for a batch of the forward pass and counts its images, skipped members
    (not images) and repaired images; a bucket that cannot grow stops the run naming
    it."""
    try:
        kinds = pool.result(ticket)
    except WorkerError as error:
        cause = error.__cause__
        if isinstance(cause, OSError) and f"{cause.filename}".startswith(bucket_dir):
            raise OutputError(f"writing in {bucket_dir}: {cause.strerror}; rerun the "
                              f"same command to resume from the last checkpoint "
                              f"after fixing this (a full disk?)") from error
        raise
    skipped = kinds.count(worker.SKIPPED)
    summary.images[split] += len(kinds) - skipped
    summary.skipped[split] += skipped
    summary.repaired[split] += kinds.count(worker.REPAIRED)


def _patched(plan: SplitPlan, items: list[tuple], summary: Summary) -> list[tuple]:
    """A batch's items, those that patch_images.tar replaces with its image's bytes
    (counted in `summary`)."""
    if not plan.patches:
        return items
    patched = [item if item[3] not in plan.patches else (plan.patches[item[3]].data, *item[1:])
               for item in items]
    summary.replaced[plan.split] += sum(item[3] in plan.patches for item in items)
    return patched


def _forward_pass(output: Path, plan: SplitPlan, shards: list[ShardPlan], position: int,
                  sizes: dict[str, int], state_path: Path, pool, buffer: memoryview,
                  slots: int, checkpoint_seconds: float, bar, summary: Summary) -> None:
    """Reads the split's archive once, front to back, while the workers file every
    record of `shards` into its bucket; checkpoints as it goes."""
    split = plan.split
    # (shard, index in its shard, archive offset, member), in the archive's order.
    order = sorted((member.offset, member.path, shard.name, member, number)
                   for shard in shards for number, member in enumerate(shard.members))
    order = [(shard, number, offset, member) for offset, _, shard, member, number in order]
    bar.update(position)
    if position >= len(order):
        return
    buckets = _Buckets(manifest.state_dir(output) / "buckets", sizes)
    bucket_dir = str(buckets.directory)
    tar = not plan.archive.is_dir()
    descriptor = os.open(plan.archive, os.O_RDONLY) if tar else -1
    free = list(range(slots))
    in_flight: collections.deque = collections.deque()
    last_checkpoint, checkpoint_due = time.monotonic(), False
    batches = _batches(order, position)
    try:
        while True:
            # Before a checkpoint the batches in flight finish and no new one starts.
            while free and not checkpoint_due and (batch := next(batches, None)) is not None:
                begin, end, span_start, span_end = batch
                slot = free.pop()
                members = order[begin:end]
                if tar and span_end - span_start > SLOT_BYTES:  # one member too large
                    shard, number, _, member = members[0]
                    items = [(os.pread(descriptor, member.size, member.offset), member.size,
                              member.label, member.name, number, shard)]
                elif tar:
                    base = slot * SLOT_BYTES
                    _read_span(descriptor, buffer[base:base + span_end - span_start],
                               span_start)
                    items = [(base + member.offset - span_start, member.size, member.label,
                              member.name, number, shard)
                             for shard, number, _, member in members]
                else:
                    items = [(member.path, member.size, member.label, member.name, number,
                              shard) for shard, number, _, member in members]
                buckets.touched.update(shard for shard, *_ in members)
                ticket = pool.submit(worker.convert_batch,
                                     (str(plan.archive), _patched(plan, items, summary),
                                      bucket_dir),
                                     _MemberNames(plan.archive, members))
                in_flight.append((ticket, slot, begin, end))
            if not in_flight:
                if not checkpoint_due:
                    break
                _save_pass(state_path, plan, shards, position, buckets.sync())
                last_checkpoint, checkpoint_due = time.monotonic(), False
                continue
            ticket, slot, begin, end = in_flight.popleft()
            _count_batch(pool, ticket, bucket_dir, summary, split)
            free.append(slot)
            bar.update(end - begin)
            position = end
            checkpoint_due = time.monotonic() - last_checkpoint >= checkpoint_seconds
        _save_pass(state_path, plan, shards, position, buckets.sync())
    finally:
        if descriptor >= 0:
            os.close(descriptor)


def _start_walk(output: Path, plan: SplitPlan, todo: list[ShardPlan], state_path: Path
                ) -> tuple[list[ShardPlan], dict, dict[str, int]]:
    """`_start_pass` for a walk: the state is the cut (the offset of the next top-level
    header, the last member before it) and what the pass had found up to it."""
    buckets = manifest.state_dir(output) / "buckets"
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(state_path.read_text())
        by_name = {shard.name: shard for shard in plan.shards}
        sizes = state["bucket_bytes"]
        if (state["job"] == plan.pass_id and {s.name for s in todo} <= set(state["shards"])
                and all((buckets / name).stat().st_size >= size
                        for name, size in sizes.items())):
            return [by_name[name] for name in state["shards"]], state, sizes
    for shard in todo:
        (buckets / shard.name).unlink(missing_ok=True)
    return todo, {"offset": 0, "last": "its start", "position": 0, "images": 0,
                  "counts": {}, "seen": [], "not_images": [], "bad_names": [], "patched": [],
                  "damage": "", "done": False}, {}


def _walk_pass(output: Path, plan: SplitPlan, shards: list[ShardPlan], state: dict,
               sizes: dict[str, int], state_path: Path, pool, buffer: memoryview,
               slots: int, checkpoint_seconds: float, bar, summary: Summary) -> dict:
    """Reads the split's tar once, front to back, headers and images alike: each image
    goes to the shard its name's hash picks, and if that is one of `shards`, to the
    workers, which file its record in the shard's bucket.  Checkpoints at cuts between
    top-level members; returns what the pass found (the final state)."""
    split = plan.split
    bar.update(state["position"])
    if state["done"]:
        return state
    ours = {shard.index: shard.name for shard in shards}
    num_shards, seed = plan.job["num_shards"], plan.job["seed"]
    label_of, devkit = plan.classes.label_of, plan.devkit
    counts = collections.Counter(state["counts"])
    seen = set(state["seen"])
    bad_names = list(state["bad_names"])
    patched = list(state["patched"])  # the names patch_images.tar replaces, as found
    images, position = state["images"], state["position"]
    cut = (state["offset"], state["last"])
    found = walk.Findings(list(state["not_images"]), state["damage"])
    buckets = _Buckets(manifest.state_dir(output) / "buckets", sizes)
    bucket_dir = str(buckets.directory)
    reader = walk.Forward(plan.archive, cut[0])
    walker = (walk.walk_train if plan.walk == "train" else walk.walk_flat)(
        reader, plan.archive, cut[0], cut[1], found)
    free = list(range(slots))
    in_flight: collections.deque = collections.deque()
    batch: list[tuple] = []  # (shard, name, offset, size, label) in archive order
    batch_end = 0  # where the batch's furthest member ends
    last_checkpoint, checkpoint_due, stopping, ended = time.monotonic(), False, False, False

    def snapshot(done: bool) -> dict:
        return {"job": plan.pass_id, "shards": [s.name for s in shards],
                "offset": cut[0], "last": cut[1], "position": position, "images": images,
                "counts": dict(counts), "seen": sorted(seen), "not_images": found.not_images,
                "bad_names": bad_names, "patched": patched, "damage": found.damage,
                "done": done}

    def save(done: bool) -> dict:
        result = snapshot(done)
        result["bucket_bytes"] = buckets.sync()
        with _writing(state_path.parent):
            files.write_atomically(state_path, json.dumps(result))
        return result

    def flush() -> None:
        slot = free.pop()
        span_start, span_end = batch[0][2], batch_end
        if span_end - span_start > SLOT_BYTES:  # one member too large for a slot
            shard, name, offset, size, label = batch[0]
            items = [(reader.get(offset, size), size, label, name, 0, shard)]
        else:
            base = slot * SLOT_BYTES
            reader.copy_into(buffer[base:base + span_end - span_start], span_start)
            items = [(base + offset - span_start, size, label, name, 0, shard)
                     for shard, name, offset, size, label in batch]
        buckets.touched.update(shard for shard, *_ in batch)
        ticket = pool.submit(worker.convert_batch,
                             (str(plan.archive), _patched(plan, items, summary), bucket_dir),
                             _MemberNames(plan.archive, items))
        in_flight.append((ticket, slot, len(batch)))
        reader.release(span_end - walk.BLOCK)
        batch.clear()

    try:
        while True:
            while free and not stopping and not ended:
                event = next(walker, None)
                if event is None:
                    ended = True
                    if batch:
                        flush()
                    break
                wnid, name, offset, size = event
                if wnid is None:  # a cut (None, next header's offset, 0, last member)
                    cut = (name, size)
                    if checkpoint_due:
                        if batch:
                            flush()
                        stopping = True
                    continue
                if plan.walk == "train":
                    counts[wnid] += 1
                    label = label_of.get(wnid)
                    if label is None:  # refused at the end of the pass
                        continue
                else:
                    number = devkit.number_of(split, name)
                    if number is None:
                        bad_names.append({"member": name,
                                          "reason": unnumbered_reason(devkit, split)})
                        continue
                    label = label_of[numbered_wnid(devkit, split, plan.archive, name, number)]
                    seen.add(number)
                if name in plan.patches:
                    patched.append(name)
                images += 1
                shard = ours.get(shuffle.shard_of(shuffle.key_hash(split, seed, name),
                                                  num_shards))
                if shard is None:
                    if not batch:
                        reader.release(offset + size - walk.BLOCK)
                    continue
                if batch and (len(batch) >= CHUNK
                              or max(batch_end, offset + size) - batch[0][2] > SLOT_BYTES):
                    flush()
                batch_end = max(batch_end, offset + size) if batch else offset + size
                batch.append((shard, name, offset, size, label))
            if not in_flight:
                if ended:
                    break
                if stopping:
                    save(False)
                    last_checkpoint, checkpoint_due, stopping = time.monotonic(), False, False
                continue
            ticket, slot, count = in_flight.popleft()
            _count_batch(pool, ticket, bucket_dir, summary, split)
            free.append(slot)
            bar.update(count)
            position += count
            checkpoint_due = (checkpoint_due
                              or time.monotonic() - last_checkpoint >= checkpoint_seconds)
        return save(True)
    finally:
        reader.close()


def _finish_walk(output: Path, plan: SplitPlan, state: dict, allow_incomplete: bool,
                 summary: Summary) -> None:
    """Checks the pass's findings against the devkit, with the errors of indexing, and
    records them in the job."""
    path, devkit, damage = plan.archive, plan.devkit, state["damage"]
    classes = devkit.classes
    findings: dict = {}
    if plan.walk == "train":
        strangers = sorted(w for w in state["counts"] if w not in classes.label_of)
        if strangers:
            raise ArchiveError(f"{path}: member {strangers[0]} is not a class of the devkit "
                               f"({len(strangers)} such classes)")
        found, expected = state["counts"], devkit.train_counts
        short = {wnid: [found.get(wnid, 0), expected.get(wnid, 1)] for wnid in classes.wnids
                 if (found.get(wnid, 0) != expected[wnid] if wnid in expected
                     else not found.get(wnid, 0))}
        if short or damage:
            if not allow_incomplete:
                _refuse_short(path, short, classes, damage)
            findings["incomplete"] = {"damage": damage, "classes": short}
        if expected:
            findings["expected"] = {"class_counts": expected}
    else:
        split, seen = plan.split, set(state["seen"])
        missing = [n for n in range(1, len(devkit.truth(split)) + 1) if n not in seen]
        if missing and not allow_incomplete:
            refuse_missing(path, devkit, split, len(seen), missing, damage)
        if missing or damage:
            if not allow_incomplete:
                _refuse_incomplete(path, "damaged", damage)
            findings["incomplete"] = {"damage": damage, "missing": [
                devkit.image_name(split, n) for n in missing]}
        findings["expected"] = {"images": len(devkit.truth(split))}
    _check_patches(path, plan.patches, set(state["patched"]), plan.patch_tar,
                   allow_incomplete, findings)
    not_images = state["not_images"] + state["bad_names"]
    if not_images:
        findings["not_images"] = not_images
    plan.job.update(images=state["images"], **findings)
    files.write_atomically(manifest.job_path(output, plan.split),
                           json.dumps(plan.job, indent=1, sort_keys=True))
    note = f"{plan.split}: {json.dumps(plan.job.get('incomplete'))}"
    if "incomplete" in plan.job and note not in summary.incomplete:
        summary.incomplete.append(note)


class _MemberNames(Sequence):
    """A batch's members as a failing worker's message names them, built only then; an
    item's fourth field is its `Member` (an indexed pass) or its name (a walk)."""

    def __init__(self, archive: Path, items: list[tuple]):
        self.archive, self.items = archive, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        member = self.items[index][3]
        name = member if isinstance(member, str) else member.path or member.name
        return f"{self.archive}: member {name}"


def _write_shards(output: Path, plan: SplitPlan, shards: list[ShardPlan], pool, window: int,
                  bar, summary: Summary) -> None:
    """Writes each shard from its complete bucket (in the workers), then its receipt."""
    buckets = manifest.state_dir(output) / "buckets"
    pending: collections.deque = collections.deque()
    todo = collections.deque(shards)
    while todo or pending:
        while todo and len(pending) < window:
            shard = todo.popleft()
            args = (str(buckets / shard.name), str(output / f".{shard.name}.tmp"),
                    str(output / shard.name), None if plan.walk else len(shard.members),
                    plan.split, plan.job["seed"])
            pending.append((shard, pool.submit(worker.write_shard, args,
                                               [str(output / shard.name)])))
        shard, ticket = pending.popleft()
        try:
            facts = pool.result(ticket)
        except WorkerError as error:
            if not isinstance(error.__cause__, OSError):
                raise
            done = summary.shards_written[plan.split] + summary.shards_kept[plan.split]
            raise OutputError(f"writing {output / shard.name}: {error.__cause__}; the {done} "
                              f"{plan.split} shards finished are kept, rerun to finish after "
                              f"fixing this (a full disk?)") from error
        if "duplicates" in facts:
            raise ArchiveError(f"{plan.archive}: member {facts['duplicates'][0]} appears more "
                               f"than once")
        replaced = _replaced(plan, shard)
        receipt = {
            "job": plan.job_id, "shard": shard.name, "records": facts["records"],
            "bytes": facts["bytes"], "mtime_ns": facts["mtime_ns"], "sha256": facts["sha256"],
            "class_counts": {str(k): v for k, v in facts["class_counts"].items()},
            "skipped": [{"member": name, "reason": _noted(replaced.get(name), reason)}
                        | ({"synset": plan.classes.wnids[label]}
                           if label != schema.UNLABELED else {})
                        for name, label, reason in facts["skipped"]],
            "repaired": _repairs(facts, replaced)}
        manifest.write_receipt(output, receipt)
        (buckets / shard.name).unlink(missing_ok=True)
        summary.shards_written[plan.split] += 1
        bar.update(1)


def _replaced(plan: SplitPlan, shard: ShardPlan) -> dict[str, str]:
    """The shard's images that patch_images.tar replaced: base name -> what replaced it."""
    if not plan.patches:
        return {}
    unused = set(plan.job.get("incomplete", {}).get("unused_patches", ()))
    seed, count = plan.job["seed"], plan.job["num_shards"]
    return {name: f"replaced by {plan.patch_tar.name} member {patch.member}"
            for name, patch in plan.patches.items() if patch.member not in unused
            and shuffle.shard_of(shuffle.key_hash(plan.split, seed, name), count) == shard.index}


def _noted(replacement: str | None, note: str) -> str:
    return f"{replacement}; {note}" if replacement and note else replacement or note


def _repairs(facts: dict, replaced: dict[str, str]) -> list[dict]:
    """A receipt's repairs: the workers' (in shard order), each replacement from the
    patch tar noted, then the replaced images that needed no other repair, by name."""
    skipped = {name for name, _, _ in facts["skipped"]}
    repaired = dict(facts["repaired"])
    return ([{"member": name, "repair": _noted(replaced.get(name), repair)}
             for name, repair in facts["repaired"]]
            + [{"member": name, "repair": replacement}
               for name, replacement in sorted(replaced.items())
               if name not in repaired and name not in skipped])


def _remove_our_temporaries(output: Path, shards: Sequence[ShardPlan]) -> None:
    """The temporaries a killed run of ours left: its shards' and its atomic writes'."""
    for shard in shards:
        (output / f".{shard.name}.tmp").unlink(missing_ok=True)
    host = socket.gethostname()
    for directory in (output, manifest.state_dir(output)):
        for path in directory.glob(f".*.{host}-*.tmp"):
            pid = path.name.rsplit("-", 1)[1].removesuffix(".tmp")
            alive = pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid)))
            if not alive:
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _usable_cpus() -> int:
    # The cores this process may run on, not the machine's: schedulers pin jobs.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def convert(output: str | Path, archives: Archives | FolderSource | str | Path,
            splits: Sequence[str] | None = None, num_shards: dict[str, int] | None = None,
            image_size: int = 256, crop: bool = True, quality: int = 90, seed: int = 0,
            processes: int | None = None, num_workers: int = 1, worker_index: int = 0,
            label_offset: int = 0, allow_incomplete: bool = False,
            checkpoint_seconds: float = CHECKPOINT_SECONDS, progress: bool = True) -> Summary:
    """Converts `splits` (default: every split the source has) of `archives` into shards
    in `output`, resuming whatever an earlier run finished.  `archives` is an `Archives`
    (ILSVRC-2012 or ILSVRC-2010, or a tar of per-class tars), a `FolderSource` (image
    folders), or a path that `sources.find_source` tells which of them it is.

    `processes` decode in parallel (default: every usable core); they are spawned, so a
    script calling this needs the usual `if __name__ == "__main__":` guard.  With
    `num_workers` > 1 this call converts only the shards of `worker_index`; the call
    that finds all shards done writes the manifest (or run `merge`).  `label_offset` 1
    writes labels 1..N (the Inception convention, see `schema`).  An archive short of
    what the devkit lists is an error unless `allow_incomplete`, which converts what is
    there and records the shortfall in the manifest.  A split missing from `num_shards`
    gets `schema.default_num_shards` for its image count.
    """
    from tfrecords_tools.base.progress import tqdm

    started = time.monotonic()
    unknown = [s for s in splits or () if s not in schema.SPLITS]
    if unknown or (splits is not None and not splits):
        raise ArgumentError(f"splits {list(splits)}: choose from {', '.join(schema.SPLITS)}")
    if not 0 <= worker_index < num_workers:
        raise ArgumentError(f"--worker-index {worker_index} must be in [0, {num_workers})")
    if label_offset not in schema.LABEL_OFFSETS:
        raise ArgumentError(f"--label-offset {label_offset}: choose 0 (labels 0..N-1, TFDS and "
                            f"Keras) or 1 (1..N, the Inception and TPU readers)")
    if not isinstance(archives, Archives | FolderSource):
        archives = find_source(archives)
    num_shards = num_shards or {}  # the others: schema.default_num_shards
    options = ImageOptions(image_size, crop, quality)
    processes = processes or _usable_cpus()
    output = Path(output)
    # What this call creates, removed again if it refuses the source before any work.
    created = [d for d in (output, manifest.state_dir(output)) if not d.exists()]
    manifest.state_dir(output).mkdir(parents=True, exist_ok=True)
    slots = 2 * processes + 2  # enough read-ahead to keep every worker busy
    shared = (multiprocessing.get_context("spawn").RawArray(ctypes.c_ubyte, slots * SLOT_BYTES)
              if processes > 1 else bytearray(slots * SLOT_BYTES))
    summary = Summary(output=output)

    # The workers start while the archives are indexed.
    planned = False
    try:
        with (Pool(processes, worker.initialize, (shared,)) if processes > 1
              else InlinePool(worker.initialize, (shared, False))) as pool:
            # Plan everything first: a bad archive fails here, before any work is done.
            if isinstance(archives, FolderSource):
                plans = _plan_folders(output, archives, splits, num_shards, options, seed,
                                      label_offset, allow_incomplete, progress)
                classes = plans[0].classes
            else:
                plans, classes = _plan_archives(output, archives, splits, num_shards, options,
                                                seed, label_offset, allow_incomplete, progress)
            if classes is not None:
                _claim_labels(output, classes)
            for plan in plans:
                _claim_output(output, plan, allow_incomplete)
                if "incomplete" in plan.job:
                    summary.incomplete.append(f"{plan.split}: " + ", ".join(
                        str(what) if kind == "damage" else f"{kind} {json.dumps(what)}"
                        for kind, what in plan.job["incomplete"].items()))
            planned = True

            ours = [(plan, shard) for plan in plans for shard in plan.shards]
            ours = ours[worker_index::num_workers]
            summary.splits = [plan.split for plan in plans]
            passes = []
            for plan in plans:
                todo = []
                for shard in (s for p, s in ours if p is plan):
                    if manifest.read_receipt(output, shard.name, plan.job_id):
                        summary.shards_kept[plan.split] += 1
                    else:
                        todo.append(shard)
                if todo:
                    state_path = _pass_path(output, plan.split, num_workers, worker_index)
                    start = _start_walk if plan.walk else _start_pass
                    passes.append((plan, state_path, *start(output, plan, todo, state_path)))
            total = sum(plan.expected * len(shards) // len(plan.shards) if plan.walk
                        else sum(len(s.members) for s in shards)
                        for plan, _, shards, _, _ in passes)
            with tqdm(total=total, unit="img", desc="converting", disable=not progress,
                      smoothing=0.05) as bar:
                for plan, state_path, shards, position, sizes in passes:
                    bar.set_postfix_str(plan.split)
                    pool.broadcast(worker.configure, (
                        plan.classes.wnids if plan.classes else (),
                        plan.classes.names if plan.classes else (), options, label_offset))
                    if plan.walk:
                        found = _walk_pass(output, plan, shards, position, sizes, state_path,
                                           pool, memoryview(shared).cast("B"), slots,
                                           checkpoint_seconds, bar, summary)
                        _finish_walk(output, plan, found, allow_incomplete, summary)
                        continue
                    _forward_pass(output, plan, shards, position, sizes, state_path, pool,
                                  memoryview(shared).cast("B"), slots, checkpoint_seconds, bar,
                                  summary)
            with tqdm(total=sum(len(shards) for _, _, shards, _, _ in passes), unit="shard",
                      desc="writing shards", disable=not progress) as bar:
                for plan, state_path, shards, _, _ in passes:
                    unfinished = [s for s in shards
                                  if not manifest.read_receipt(output, s.name, plan.job_id)]
                    _write_shards(output, plan, unfinished, pool, 2 * processes, bar, summary)
                    state_path.unlink(missing_ok=True)
    except WorkerError as error:
        raise WorkerError(f"{error}; the finished shards are kept and a rerun of the same "
                          f"command resumes from the last checkpoint") from error
    except Exception:  # not Ctrl-C: an index being built is kept for the rerun
        if not planned:  # refused before any work: leave no directory of ours behind
            for directory in reversed(created):
                shutil.rmtree(directory, ignore_errors=True)
        raise
    _remove_our_temporaries(output, [shard for _, shard in ours])
    summary.merged = manifest.merge(output)
    summary.seconds = time.monotonic() - started
    return summary
