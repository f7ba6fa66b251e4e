"""A split's forward pass: its archive read once, front to back, while the worker
processes file every record of this machine's shards in the shard's bucket.

This process reads the archive a few MB at a time into a buffer shared with the workers;
the workers turn each image into its finished record and append it to the bucket file
of its shard (`.convert/buckets/`, one O_APPEND write per shard and batch), so this
process never handles a record.  Every `checkpoint_seconds` (at the next cut between
top-level members, in a walk) the batches in flight finish, the buckets are synced and
their lengths recorded (`.convert/<split>.pass.*.json`, with a walk's offset and findings
so far); a rerun truncates the buckets back to that record and reads on from there.  The
shard shuffle never becomes the read order: on a disk, a NAS or a network mount every
backward jump is a seek.

Two kinds, one interface (`start`): `IndexedPass` reads the members an index listed, in
archive order; `WalkPass` reads a devkit's train or val tar with no index first
(`walk`), placing each image as its header comes, and checks what it found against the
devkit at the end (`finish`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tfrecords_tools import manifest, shuffle, walk, worker
from tfrecords_tools.base import files
from tfrecords_tools.devkit import numbered_wnid, refuse_missing, unnumbered_reason
from tfrecords_tools.errors import ArchiveError, OutputError, WorkerError
from tfrecords_tools.plan import (
    ShardPlan,
    SplitPlan,
    check_patches,
    refuse_incomplete,
    refuse_short,
)
from tfrecords_tools.summary import Summary

CHUNK = 32  # images per worker task: few enough messages, small enough to keep all busy
SLOT_BYTES = 4 << 20  # archive bytes read at once into one slot of the shared buffer


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


def state_path(output: Path, split: str, num_workers: int, worker_index: int) -> Path:
    """Where this machine's pass over `split` records its checkpoints."""
    return manifest.state_dir(output) / f"{split}.pass.{worker_index}-of-{num_workers}.json"


def start(output: Path, plan: SplitPlan, todo: list[ShardPlan], path: Path) -> Pass:
    """The pass that fills the shards `todo` of `plan`: the recorded one at `path` where
    it matches (and its buckets hold what it says), else a new one from the start."""
    return (WalkPass if plan.walk else IndexedPass)(output, plan, todo, path)


class Pass:
    """A forward pass over `plan`'s archive for `shards`, resumable from `state_path`.

    `run` reads the archive and fills the shards' buckets; `finish` checks what the pass
    found and records it in the job; `total` is the images it reads, for progress."""

    def __init__(self, output: Path, plan: SplitPlan, todo: list[ShardPlan],
                 path: Path):
        self.output, self.plan, self.state_path = output, plan, path
        buckets = manifest.state_dir(output) / "buckets"
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(path.read_text())
            by_name = {shard.name: shard for shard in plan.shards}
            sizes = state["bucket_bytes"]
            if (state["job"] == plan.pass_id and {s.name for s in todo} <= set(state["shards"])
                    and all((buckets / name).stat().st_size >= size
                            for name, size in sizes.items())):
                self.shards = [by_name[name] for name in state["shards"]]
                self.sizes, self.state = sizes, state
                return
        for shard in todo:
            (buckets / shard.name).unlink(missing_ok=True)
        self.shards, self.sizes, self.state = todo, {}, self.new_state()

    def new_state(self) -> dict:
        raise NotImplementedError

    @property
    def total(self) -> int:
        raise NotImplementedError

    def run(self, pool, buffer: memoryview, slots: int, checkpoint_seconds: float, bar,
            summary: Summary) -> None:
        raise NotImplementedError

    def finish(self, allow_incomplete: bool, summary: Summary) -> None:
        """Nothing to check: an indexed pass's findings were checked when planned."""


class IndexedPass(Pass):
    """Reads the members the index listed for `shards`, in archive order; the state is
    how many it has done."""

    def new_state(self) -> dict:
        return {"position": 0}

    @property
    def position(self) -> int:
        return self.state["position"]

    @property
    def total(self) -> int:
        return sum(len(shard.members) for shard in self.shards)

    def _save(self, position: int, sizes: dict[str, int]) -> None:
        with _writing(self.state_path.parent):
            files.write_atomically(self.state_path, json.dumps(
                {"job": self.plan.pass_id, "shards": [s.name for s in self.shards],
                 "position": position, "bucket_bytes": sizes}))

    def run(self, pool, buffer: memoryview, slots: int, checkpoint_seconds: float, bar,
            summary: Summary) -> None:
        """Reads the split's archive once, front to back, while the workers file every
        record of `shards` into its bucket; checkpoints as it goes."""
        split, plan, shards, position = self.plan.split, self.plan, self.shards, self.position
        # (shard, index in its shard, archive offset, member), in the archive's order.
        order = sorted((member.offset, member.path, shard.name, member, number)
                       for shard in shards for number, member in enumerate(shard.members))
        order = [(shard, number, offset, member) for offset, _, shard, member, number in order]
        bar.update(position)
        if position >= len(order):
            return
        buckets = _Buckets(manifest.state_dir(self.output) / "buckets", self.sizes)
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
                        walk.read_into(descriptor, buffer[base:base + span_end - span_start],
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
                    self._save(position, buckets.sync())
                    last_checkpoint, checkpoint_due = time.monotonic(), False
                    continue
                ticket, slot, begin, end = in_flight.popleft()
                _count_batch(pool, ticket, bucket_dir, summary, split)
                free.append(slot)
                bar.update(end - begin)
                position = end
                checkpoint_due = time.monotonic() - last_checkpoint >= checkpoint_seconds
            self._save(position, buckets.sync())
        finally:
            if descriptor >= 0:
                os.close(descriptor)


class WalkPass(Pass):
    """Reads a devkit's train or val tar with no index: each image goes to the shard its
    name's hash picks, as its header comes.  The state is the cut (the offset of the next
    top-level header, the last member before it) and what the pass found up to it."""

    def new_state(self) -> dict:
        return {"offset": 0, "last": "its start", "position": 0, "images": 0, "counts": {},
                "seen": [], "not_images": [], "bad_names": [], "patched": [], "damage": "",
                "done": False}

    @property
    def total(self) -> int:
        return self.plan.expected * len(self.shards) // len(self.plan.shards)

    def run(self, pool, buffer: memoryview, slots: int, checkpoint_seconds: float, bar,
            summary: Summary) -> None:
        """Reads the split's tar once, front to back, headers and images alike: each
        image goes to the shard its name's hash picks, and if that is one of `shards`, to
        the workers, which file its record in the shard's bucket.  Checkpoints at cuts
        between top-level members; `state` ends as what the pass found."""
        split, plan, shards, state = self.plan.split, self.plan, self.shards, self.state
        bar.update(state["position"])
        if state["done"]:
            return
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
        buckets = _Buckets(manifest.state_dir(self.output) / "buckets", self.sizes)
        bucket_dir = str(buckets.directory)
        in_flight: collections.deque = collections.deque()  # (ticket, slot, images)
        last_checkpoint, checkpoint_due, stopping, ended = time.monotonic(), False, False, False

        def complete_oldest() -> bool:
            """Waits for the oldest batch in flight and counts it; False if none is."""
            nonlocal position, checkpoint_due
            if not in_flight:
                return False
            ticket, slot, count = in_flight.popleft()
            _count_batch(pool, ticket, bucket_dir, summary, split)
            if slot is not None:
                reader.unpin(slot)
            bar.update(count)
            position += count
            checkpoint_due = (checkpoint_due
                              or time.monotonic() - last_checkpoint >= checkpoint_seconds)
            return True

        reader = walk.Forward(plan.archive, cut[0], buffer, SLOT_BYTES, complete_oldest)
        walker = (walk.walk_train if plan.walk == "train" else walk.walk_flat)(
            reader, plan.archive, cut[0], cut[1], found)
        batch: list[tuple] = []  # (shard, name, offset, size, label) in archive order
        batch_end = 0  # where the segment of the batch's first member ends

        def snapshot(done: bool) -> dict:
            return {"job": plan.pass_id, "shards": [s.name for s in shards],
                    "offset": cut[0], "last": cut[1], "position": position, "images": images,
                    "counts": dict(counts), "seen": sorted(seen), "not_images": found.not_images,
                    "bad_names": bad_names, "patched": patched, "damage": found.damage,
                    "done": done}

        def save(done: bool) -> dict:
            result = snapshot(done)
            result["bucket_bytes"] = buckets.sync()
            with _writing(self.state_path.parent):
                files.write_atomically(self.state_path, json.dumps(result))
            return result

        def flush() -> None:
            """Hands the batch to the workers: its images where the reader read them (one
            segment), or one image that no segment holds whole, as bytes."""
            first, last = batch[0], batch[-1]
            span_end = last[2] + last[3]
            if span_end > reader.segment_end(first[2]):
                shard, name, offset, size, label = first
                slot, items = None, [(reader.get(offset, size), size, label, name, 0, shard)]
            else:
                slot, base = reader.locate(first[2], span_end - first[2])
                reader.pin(slot)
                items = [(base + offset - first[2], size, label, name, 0, shard)
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
                while len(in_flight) < slots and not stopping and not ended:
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
                    shard = None  # stays None for an image not converted here
                    if plan.walk == "train":
                        counts[wnid] += 1
                        label = label_of.get(wnid)  # None: refused at the end of the pass
                    else:
                        number = devkit.number_of(split, name)
                        label = None
                        if number is None:
                            bad_names.append({"member": name,
                                              "reason": unnumbered_reason(devkit, split)})
                        else:
                            label = label_of[numbered_wnid(devkit, split, plan.archive, name,
                                                           number)]
                            seen.add(number)
                    if label is not None:
                        if name in plan.patches:
                            patched.append(name)
                        images += 1
                        shard = ours.get(shuffle.shard_of(shuffle.key_hash(split, seed, name),
                                                          num_shards))
                    # A batch is consecutive images of one segment: an image beyond it
                    # sends the batch, so that the reader can let the bytes behind go.
                    if batch and (len(batch) >= CHUNK or offset + size > batch_end):
                        flush()
                    if shard is None:  # others' (or refused): its bytes are not needed
                        if not batch:
                            reader.release(offset + size - walk.BLOCK)
                        continue
                    if not batch:
                        batch_end = reader.segment_end(offset)
                    batch.append((shard, name, offset, size, label))
                    if offset + size > batch_end:  # across segments: alone, at once
                        flush()
                if complete_oldest():
                    continue
                if ended:
                    break
                if stopping:
                    save(False)
                    last_checkpoint, checkpoint_due, stopping = time.monotonic(), False, False
            self.state = save(True)
        finally:
            reader.close()

    def finish(self, allow_incomplete: bool, summary: Summary) -> None:
        """Checks the pass's findings against the devkit, with the errors of indexing,
        and records them in the job."""
        plan, state = self.plan, self.state
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
                    refuse_short(path, short, classes, damage)
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
                    refuse_incomplete(path, "damaged", damage)
                findings["incomplete"] = {"damage": damage, "missing": [
                    devkit.image_name(split, n) for n in missing]}
            findings["expected"] = {"images": len(devkit.truth(split))}
        check_patches(path, plan.patches, set(state["patched"]), plan.patch_tar,
                       allow_incomplete, findings)
        not_images = state["not_images"] + state["bad_names"]
        if not_images:
            findings["not_images"] = not_images
        plan.job.update(images=state["images"], **findings)
        files.write_atomically(manifest.job_path(self.output, plan.split),
                               json.dumps(plan.job, indent=1, sort_keys=True))
        note = f"{plan.split}: {json.dumps(plan.job.get('incomplete'))}"
        if "incomplete" in plan.job and note not in summary.incomplete:
            summary.incomplete.append(note)
