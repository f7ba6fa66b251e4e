"""The tasks of the worker processes: convert a batch of members, write a shard.

The parent reads the archive front to back into a buffer shared with the workers, so
a worker never seeks in the archive; a worker turns each member into the finished
TFRecord bytes of its record (decode, repair, resize, encode, serialise, frame) and
appends it to its shard's bucket itself, so the parent never touches a record.  Once
every member of a shard is in its bucket, a worker puts the bucket's records in the
shard's order and writes the shard.  Free of TensorFlow, so a worker starts in a
fraction of a second.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import struct
from pathlib import Path

from tfrecords_tools import schema, shuffle
from tfrecords_tools.base.files import atomic_path
from tfrecords_tools.errors import OutputError
from tfrecords_tools.images import ImageOptions, configure_worker_process, reencode
from tfrecords_tools.pool import working_on

#: A bucket entry's head: its label (the class index, without the label offset, -1
#: unlabeled), the record's length, the note's length, the member name's length and its
#: kind; then the name, the framed record, then the note (the repair, or why it was
#: skipped).  The shard's order comes from the names (`shuffle.in_shard_order`).
ENTRY = struct.Struct("<iIHHB")
CONVERTED, REPAIRED, SKIPPED = 0, 1, 2

_buffer: memoryview | None = None  # the parent's read buffer, shared
_job: tuple | None = None  # (wnids, names, ImageOptions, label offset) of the split


def initialize(buffer, own_process: bool = True) -> None:
    """Sets up a worker: the parent's shared read buffer, and in a worker process of its
    own (not the parent running tasks in line) the image libraries' settings."""
    global _buffer
    _buffer = memoryview(buffer).cast("B")
    if own_process:
        configure_worker_process()


def configure(wnids: tuple[str, ...], names: tuple[str, ...], options: ImageOptions,
              label_offset: int) -> None:
    """Sets the split's classes and image options before its batches come."""
    global _job
    _job = (wnids, names, options, label_offset)


def convert_batch(source: str, items: list[tuple], buckets: str) -> bytes:
    """Converts `items`: (where, size, label, name, index in its shard, shard), where
    `where` is an offset into the shared buffer, the member's bytes themselves (one too
    large for the buffer), or a file path under `source` (the Kaggle layout).

    Each shard's entries are appended to its bucket file under `buckets` with one
    write, so the parent never touches a record (its CPU is what caps a many-core run);
    returns each item's kind (CONVERTED, REPAIRED or SKIPPED), one byte an item."""
    wnids, names, options, offset = _job
    entries: dict[str, list[bytes]] = collections.defaultdict(list)
    kinds = bytearray()
    for number, (where, size, label, name, _, shard) in enumerate(items):
        working_on(number)
        if isinstance(where, int):
            data = bytes(_buffer[where:where + size])
        elif isinstance(where, bytes):
            data = where
        else:
            data = (Path(source) / where).read_bytes()
        outcome = reencode(data, options)
        if outcome.skipped:
            record, kind, note = b"", SKIPPED, outcome.skipped
        else:
            labelled = label != schema.UNLABELED
            record = schema.tfrecord(schema.serialize(schema.ImageRecord(
                outcome.encoded, outcome.height, outcome.width, name,
                label + offset if labelled else label, wnids[label] if labelled else "",
                names[label] if labelled else "")))
            kind, note = (REPAIRED, outcome.repaired) if outcome.repaired else (CONVERTED, "")
        note = note.encode()[:0xFFFF]
        key = name.encode()
        entries[shard].append(ENTRY.pack(label, len(record), len(note), len(key), kind)
                              + key + record + note)
        kinds.append(kind)
    for shard, shard_entries in entries.items():
        append_entries(Path(buckets) / shard, b"".join(shard_entries))
    return bytes(kinds)


def append_entries(path: Path, data: bytes) -> None:
    """Appends whole entries in one write: workers share a bucket, and O_APPEND keeps
    each write in one piece.  A short write (a full disk) raises: the run stops and a
    rerun truncates the buckets back to the last checkpoint."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, data)
        finally:
            os.close(descriptor)
    except OSError as error:  # os.write's carries no file name
        raise OSError(error.errno, error.strerror, str(path)) from error
    if written != len(data):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (wrote {written} of "
                      f"{len(data)} bytes)", str(path))


def read_bucket(path: Path, split: str, seed: int) -> tuple[list[tuple], list[str]]:
    """The bucket's (name, label, record, kind, note) in shard order, and the names that
    come more than once (each once)."""
    data = path.read_bytes() if path.exists() else b""  # a shard the hash gave no member
    by_name: dict[str, tuple] = {}
    duplicates: set[str] = set()
    position = 0
    while position < len(data):
        label, length, note_length, name_length, kind = ENTRY.unpack_from(data, position)
        position += ENTRY.size
        name = data[position:position + name_length].decode()
        position += name_length
        record = data[position:position + length]
        note = data[position + length:position + length + note_length].decode()
        position += length + note_length
        if name in by_name:
            duplicates.add(name)
        by_name[name] = (name, label, record, kind, note)
    return ([by_name[name] for name in shuffle.in_shard_order(split, seed, list(by_name))],
            sorted(duplicates))


def write_shard(bucket: str, temporary: str, final: str, count: int | None, split: str,
                seed: int) -> dict:
    """Writes the shard from its complete bucket (of `count` records where known);
    returns the receipt's facts, or {"duplicates": names} and no shard where a member
    name comes more than once."""
    working_on(0)
    entries, duplicates = read_bucket(Path(bucket), split, seed)
    if duplicates:
        return {"duplicates": duplicates}
    if count is not None and len(entries) != count:
        raise OutputError(f"{bucket}: {count - len(entries)} of its {count} records are "
                          f"missing")
    digest = hashlib.sha256()
    class_counts = collections.Counter()
    skipped, repaired, records = [], [], 0
    with atomic_path(final, temporary) as path, open(path, "wb") as handle:
        for name, label, record, kind, note in entries:
            if kind == SKIPPED:
                skipped.append((name, label, note))
                continue
            if kind == REPAIRED:
                repaired.append((name, note))
            handle.write(record)
            digest.update(record)
            records += 1
            if label != schema.UNLABELED:
                class_counts[label] += 1
    stat = os.stat(final)
    return {"records": records, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": digest.hexdigest(), "class_counts": dict(sorted(class_counts.items())),
            "skipped": skipped, "repaired": repaired}
