"""ILSVRC-2012 archives to sharded TFRecords: deterministic, parallel, resumable (DESIGN.md §2).

How a run goes:
1. Plan: index the archives (headers only), sort each split's images by name, shuffle
   them with the seed and cut the list into shards.  The plan, and so every shard's
   bytes, depends only on the archives and the arguments, never on the number of
   processes or machines.
2. Convert: worker processes read each image with one seek (`members.MemberReader`),
   decode, repair, resize and re-encode it (`images.reencode`); this process takes the
   results in order and writes them to `.<shard>.tmp`, renamed when complete.
   A receipt (record count, sha256, skipped and repaired members) is then written to
   `.convert/<shard>.json`.
3. Merge: once every shard of a split has a receipt, `manifest.json` is written from
   the receipts (`labels.txt` is written at the start, from the devkit).

A rerun skips the shards whose receipt matches both the job and the file's sha256, and
redoes the others, so a crash or `kill -9` at any moment costs at most the shards in
flight.  With `num_workers` K and `worker_index` I, this machine converts every K-th
shard from I; any machine then merges.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow as tf

from tfrecords_tools import __version__, schema
from tfrecords_tools.archives import (
    Archives,
    ClassIndex,
    Devkit,
    index_flat,
    index_train,
    label_validation,
    read_devkit,
)
from tfrecords_tools.errors import ArchiveError, OutputError
from tfrecords_tools.images import CODEC, ImageOptions, Outcome
from tfrecords_tools.members import Member, MemberReader
from tfrecords_tools.worker import convert_chunk, convert_members

STATE_DIR = ".convert"
MANIFEST = "manifest.json"
LABELS = "labels.txt"
CHUNK = 16  # images per worker task


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
    job: dict  # everything the split's bytes depend on
    shards: tuple[ShardPlan, ...]

    @property
    def job_id(self) -> str:
        return hashlib.sha256(json.dumps(self.job, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Summary:
    """What a run did, per split."""

    images: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    repaired: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shards_written: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    shards_kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
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
        lines.append(f"{total} images in {self.seconds:.1f} s ({rate:.0f} images/s); "
                     f"manifest written for: {', '.join(self.merged) or 'none yet'}")
        return "\n".join(lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    # Into one buffer, unbuffered: a new 1 MiB bytes object per block costs as much again
    # as the hashing.
    block = bytearray(1 << 20)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(block):
            digest.update(view[:size])
    return digest.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    # Machines sharing the output may write the same file at once: one temporary each.
    temporary = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _archive_identity(path: Path | None) -> dict | None:
    # Name and size, not the full path: machines of one job may mount the archives anywhere.
    if path is None:
        return None
    return {"name": path.name, "bytes": None if path.is_dir() else path.stat().st_size}


def plan_split(split: str, path: Path, devkit: Devkit | None, devkit_path: Path | None,
               classes: ClassIndex | None, num_shards: int, options: ImageOptions, seed: int,
               progress: bool = True) -> tuple[SplitPlan, ClassIndex | None]:
    """The split's shards, each with its members in their final order, and the classes."""
    if split == "train":
        members, classes = index_train(path, devkit.classes if devkit else classes, progress)
    elif split == "validation":
        if devkit is None:
            raise ArchiveError(f"{path}: labelling the validation split needs the devkit "
                               f"(ILSVRC2012_devkit_t12.tar.gz)")
        members = label_validation(index_flat(path), devkit, path, devkit_path)
        classes = devkit.classes
    else:
        members = index_flat(path)
    members = sorted(members, key=lambda m: m.name)
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        duplicate = next(n for n, c in collections.Counter(names).items() if c > 1)
        raise ArchiveError(f"{path}: member {duplicate} appears more than once")
    if split != "test":
        # Classes mixed within every shard; the string seed hashes the same in every run.
        random.Random(f"{split}:{seed}").shuffle(members)
    if not 1 <= num_shards <= len(members):
        raise ValueError(f"--{split}-shards {num_shards}: must be between 1 and the "
                         f"{len(members)} images of {path}")
    shards = tuple(ShardPlan(split, i, num_shards, tuple(
        members[i * len(members) // num_shards:(i + 1) * len(members) // num_shards]))
        for i in range(num_shards))
    job = {"split": split, "archive": _archive_identity(path),
           "devkit": _archive_identity(devkit_path if split != "test" else None),
           "num_shards": num_shards, "images": len(members), "size": options.size,
           "crop": options.crop, "quality": options.quality, "seed": seed,
           "version": __version__, "codec": CODEC}
    return SplitPlan(split, path, job, shards), classes


def _receipt_path(output: Path, shard: ShardPlan) -> Path:
    return output / STATE_DIR / f"{shard.name}.json"


def _finished(output: Path, plan: SplitPlan, shard: ShardPlan) -> dict | None:
    """The shard's receipt if the shard on disk is the one it describes, else None."""
    try:
        receipt = json.loads(_receipt_path(output, shard).read_text())
    except (OSError, ValueError):
        return None
    path = output / shard.name
    if receipt.get("job") != plan.job_id or not path.is_file():
        return None
    if path.stat().st_size != receipt.get("bytes") or file_sha256(path) != receipt.get("sha256"):
        return None
    return receipt


def _claim_output(output: Path, plan: SplitPlan) -> None:
    """Refuses a directory that holds this split's shards from another conversion."""
    job_path = output / STATE_DIR / f"{plan.split}.job.json"
    if job_path.exists():
        theirs = json.loads(job_path.read_text())
        if theirs != plan.job:
            differences = ", ".join(f"{k}: {theirs.get(k)!r} there, {v!r} here"
                                    for k, v in plan.job.items() if theirs.get(k) != v)
            raise OutputError(f"{output} holds {plan.split} shards of another conversion "
                              f"({differences}); choose another output directory or remove "
                              f"them")
        return
    strangers = sorted(output.glob(schema.shard_pattern(plan.split)))
    if strangers:
        raise OutputError(f"{output} holds {plan.split} shards this converter has no record "
                          f"of (e.g. {strangers[0].name}); choose another output directory or "
                          f"remove them")
    _write_atomically(job_path, json.dumps(plan.job, indent=1, sort_keys=True))


def _claim_labels(output: Path, classes: ClassIndex) -> None:
    path = output / LABELS
    if path.exists():
        if path.read_text(encoding="utf-8") != classes.labels_txt():
            raise OutputError(f"{path} lists other classes than these archives; choose "
                              f"another output directory")
    else:
        _write_atomically(path, classes.labels_txt())


def _chunks(shards: Sequence[ShardPlan]) -> Iterator[tuple[ShardPlan, list[Member]]]:
    """The members in shard order, a worker task's worth at a time."""
    for shard in shards:
        for start in range(0, len(shard.members), CHUNK):
            yield shard, list(shard.members[start:start + CHUNK])


@contextlib.contextmanager
def _worker_pool(processes: int):
    if processes == 1:
        yield None
        return
    # spawn: the workers import the image codecs (Pillow, simplejpeg, OpenCV), not the
    # TensorFlow of this process.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield pool


def _reencoded(source: Path, shards: Sequence[ShardPlan], options: ImageOptions, pool,
               window: int) -> Iterator[tuple[ShardPlan, list[Member], list[Outcome]]]:
    """Worker results in shard order, at most `window` chunks in flight."""
    if pool is None:
        with MemberReader(source) as reader:
            for shard, members in _chunks(shards):
                yield shard, members, convert_members(reader, members, options)
        return
    pending = collections.deque()
    for shard, members in _chunks(shards):
        pending.append((shard, members, pool.apply_async(convert_chunk,
                                                         (source, members, options))))
        if len(pending) >= window:
            shard, members, result = pending.popleft()
            yield shard, members, result.get()
    while pending:
        shard, members, result = pending.popleft()
        yield shard, members, result.get()


class _ShardWriter:
    """Writes one shard to a temporary name; `finish` renames it and returns the receipt."""

    def __init__(self, output: Path, plan: SplitPlan, shard: ShardPlan,
                 classes: ClassIndex | None):
        self.output, self.plan, self.shard, self.classes = output, plan, shard, classes
        self.path = output / shard.name
        self.temporary = output / f".{shard.name}.tmp"
        self.writer = tf.io.TFRecordWriter(str(self.temporary))
        self.records = 0
        self.class_counts = collections.Counter()
        self.skipped, self.repaired = [], []
        self.pending = len(shard.members)

    def add(self, member: Member, outcome: Outcome) -> None:
        self.pending -= 1
        if outcome.skipped:
            self.skipped.append({"member": member.name, "reason": outcome.skipped})
            return
        if outcome.repaired:
            self.repaired.append({"member": member.name, "repair": outcome.repaired})
        labelled = member.label != schema.UNLABELED
        record = schema.ImageRecord(
            outcome.encoded, outcome.height, outcome.width, member.name, member.label,
            self.classes.wnids[member.label] if labelled else "",
            self.classes.names[member.label] if labelled else "")
        self.writer.write(schema.serialize(record))
        self.records += 1
        if labelled:
            self.class_counts[member.label] += 1

    def finish(self) -> dict:
        self.writer.close()
        with open(self.temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temporary, self.path)
        receipt = {"job": self.plan.job_id, "shard": self.shard.name, "records": self.records,
                   "bytes": self.path.stat().st_size, "sha256": file_sha256(self.path),
                   "class_counts": {str(k): v for k, v in sorted(self.class_counts.items())},
                   "skipped": self.skipped, "repaired": self.repaired}
        _write_atomically(_receipt_path(self.output, self.shard), json.dumps(receipt, indent=1))
        return receipt

    def abandon(self) -> None:
        # Already failing (a full disk fails the close too): the temporary goes regardless.
        with contextlib.suppress(Exception):
            self.writer.close()
        self.temporary.unlink(missing_ok=True)


def _convert_shards(output: Path, plan: SplitPlan, shards: Sequence[ShardPlan],
                    classes: ClassIndex | None, options: ImageOptions, pool, window: int, bar,
                    summary: Summary) -> None:
    writer = None
    try:
        for shard, members, outcomes in _reencoded(plan.archive, shards, options, pool,
                                                   window):
            if writer is None:
                writer = _ShardWriter(output, plan, shard, classes)
            for member, outcome in zip(members, outcomes, strict=True):
                writer.add(member, outcome)
                summary.skipped[plan.split] += bool(outcome.skipped)
                summary.repaired[plan.split] += bool(outcome.repaired)
            bar.update(len(members))
            summary.images[plan.split] += len(members)
            if writer.pending == 0:
                writer.finish()
                writer = None
                summary.shards_written[plan.split] += 1
    except (OSError, tf.errors.OpError) as error:
        if writer is not None:
            writer.abandon()
        done = summary.shards_written[plan.split] + summary.shards_kept[plan.split]
        raise OutputError(f"writing {output / (writer.shard.name if writer else '')}: "
                          f"{getattr(error, 'message', error)}; the {done} {plan.split} shards "
                          f"finished are kept, rerun to finish after fixing this "
                          f"(a full disk?)") from error
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise


def merge(output: str | Path, splits: Sequence[str] | None = None) -> list[str]:
    """Writes `manifest.json` for every split whose shards all have receipts.

    Returns the splits merged.  `splits` (default: all the directory has job records for)
    must be complete, or the error names the missing shards.
    """
    output = Path(output)
    state = output / STATE_DIR
    available = [s for s in schema.SPLITS if (state / f"{s}.job.json").exists()]
    if splits is None:
        wanted, strict = available, False
    else:
        wanted, strict = list(splits), True
        absent = [s for s in wanted if s not in available]
        if absent:
            raise OutputError(f"{output}: no conversion of {', '.join(absent)} was started here")
    manifest_path = output / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
        "tool": "tfrecords_tools", "version": __version__, "splits": {}}
    classes = schema.read_labels(output / LABELS) if (output / LABELS).exists() else []
    merged = []
    for split in wanted:
        job = json.loads((state / f"{split}.job.json").read_text())
        job_id = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
        receipts, missing = [], []
        for index in range(job["num_shards"]):
            name = schema.shard_name(split, index, job["num_shards"])
            try:
                receipt = json.loads((state / f"{name}.json").read_text())
            except (OSError, ValueError):
                receipt = None
            if receipt is None or receipt["job"] != job_id or not (output / name).is_file():
                missing.append(name)
            else:
                receipts.append(receipt)
        if missing:
            if strict:
                raise OutputError(f"{output}: {len(missing)} {split} shards are not finished "
                                  f"(e.g. {missing[0]}); run the converter for them first")
            continue
        class_counts = collections.Counter()
        for receipt in receipts:
            class_counts.update({int(k): v for k, v in receipt["class_counts"].items()})
        manifest["splits"][split] = {
            "records": sum(r["records"] for r in receipts),
            "num_shards": job["num_shards"],
            "class_counts": ({classes[label][0]: class_counts[label]
                              for label in range(len(classes))} if split != "test" else {}),
            "shards": [{"name": r["shard"], "records": r["records"], "bytes": r["bytes"],
                        "sha256": r["sha256"]} for r in receipts],
            "skipped": [dict(s, shard=r["shard"]) for r in receipts for s in r["skipped"]],
            "repaired": [dict(s, shard=r["shard"]) for r in receipts for s in r["repaired"]],
            "arguments": job,
        }
        merged.append(split)
    if merged:
        manifest["num_classes"] = len(classes)
        _write_atomically(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return merged


def _usable_cpus() -> int:
    # The cores this process may run on, not the machine's: schedulers pin jobs.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def convert(output: str | Path, archives: Archives | str | Path,
            splits: Sequence[str] = schema.SPLITS, num_shards: dict[str, int] | None = None,
            image_size: int = 256, crop: bool = True, quality: int = 90, seed: int = 0,
            processes: int | None = None, num_workers: int = 1, worker_index: int = 0,
            progress: bool = True) -> Summary:
    """Converts `splits` of the ILSVRC-2012 `archives` (an `Archives` or the directory
    holding them) into shards in `output`, resuming whatever an earlier run finished.

    `processes` decode in parallel (default: every usable core); they are spawned, so a
    script calling this needs the usual `if __name__ == "__main__":` guard.  With
    `num_workers` > 1 this call converts only the shards of `worker_index`; the call
    that finds all shards done writes the manifest (or run `merge`).
    """
    from tqdm import tqdm

    started = time.monotonic()
    unknown = [s for s in splits if s not in schema.SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits {list(splits)}: choose from {', '.join(schema.SPLITS)}")
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"--worker-index {worker_index} must be in [0, {num_workers})")
    if not isinstance(archives, Archives):
        archives = Archives.find(archives)
    num_shards = {**schema.DEFAULT_NUM_SHARDS, **(num_shards or {})}
    options = ImageOptions(image_size, crop, quality)
    processes = processes or _usable_cpus()
    output = Path(output)
    (output / STATE_DIR).mkdir(parents=True, exist_ok=True)

    # The workers start while the archives are indexed.
    with _worker_pool(processes) as pool:
        # Plan everything first: a bad archive fails here, before any work is done.
        devkit = read_devkit(archives.devkit) if archives.devkit else None
        plans, classes = [], devkit.classes if devkit else None
        for split in schema.SPLITS:
            if split in splits:
                plan, classes = plan_split(split, archives.path_for(split), devkit,
                                           archives.devkit, classes, num_shards[split], options,
                                           seed, progress)
                plans.append(plan)
        if classes is not None:
            _claim_labels(output, classes)
        for plan in plans:
            _claim_output(output, plan)

        ours = [(plan, shard) for plan in plans for shard in plan.shards]
        ours = ours[worker_index::num_workers]
        summary = Summary(splits=[plan.split for plan in plans])
        todo = []
        for plan, shard in ours:
            if _finished(output, plan, shard):
                summary.shards_kept[plan.split] += 1
            else:
                todo.append((plan, shard))
        with tqdm(total=sum(len(s.members) for _, s in todo), unit="img", desc="converting",
                  disable=not progress, smoothing=0.05) as bar:
            for plan in plans:
                shards = [s for p, s in todo if p is plan]
                if shards:
                    bar.set_postfix_str(plan.split)
                    _convert_shards(output, plan, shards, classes, options, pool,
                                    4 * processes, bar, summary)
    summary.merged = merge(output)
    summary.seconds = time.monotonic() - started
    return summary
