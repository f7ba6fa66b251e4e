"""Reading an ILSVRC tar once, front to back, with no index first: its images as their
headers come.

`Forward` reads the archive file forward only, a few MB at a time, straight into the
memory the worker processes read the images from, and keeps the bytes from the earliest
one still needed (`release`) to the furthest read, so the headers and the images come
out of the same reads.  `walk_train` and `walk_flat` yield the images
of the train tar (in its per-class inner tars) and of a flat tar (val, test), each
followed by a cut: where a later run can start again (between outer members).  Plain
ustar headers (ILSVRC's inner tars) are parsed from memory; anything else (long names,
pax headers, links, damage) goes to `tarfile` from that header on, with the state it
needs carried over, so errors name the same bytes and members as indexing does.
"""

from __future__ import annotations

import collections
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tfrecords_tools.archives import (
    _HIDDEN,
    DamagedArchive,
    _base_name,
    _check_inside,
    _open_tar,
    _tar_files,
    plain_header,
)
from tfrecords_tools.devkit import WNID
from tfrecords_tools.errors import ArchiveError

BLOCK = tarfile.BLOCKSIZE


def read_into(descriptor: int, view: memoryview, offset: int) -> None:
    """file[offset:offset + len(view)] into `view`, the kernel writing it there."""
    while len(view):
        count = os.preadv(descriptor, [view], offset)
        if count == 0:
            raise ArchiveError(f"archive ended at byte {offset}: did it change during the run?")
        view, offset = view[count:], offset + count


class Forward:
    """The archive file, read forward only, a segment of `slot_bytes` at a time, each
    straight into a free slot of `buffer` (which the worker processes share): an image
    the workers convert is in the very memory the kernel read it into, copied by no one.

    The walk reads headers with `get` (a copy, 512 bytes); the pass takes a batch of
    images lying in one segment with `locate` and `pin`s its slot while the batch is in
    flight.  `release(offset)`: the walk needs no byte before `offset` any more.  A slot
    is read into again once its segment is released and unpinned; where none is, `wait`
    (the pass's) finishes the oldest batch in flight.  A range larger than a slot is read
    on its own."""

    def __init__(self, path: Path, start: int, buffer: memoryview, slot_bytes: int,
                 wait: Callable[[], bool]):
        self.descriptor = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.descriptor).st_size
        self.buffer, self.slot_bytes, self.wait = buffer, slot_bytes, wait
        self.free = list(range(len(buffer) // slot_bytes))[::-1]
        self.held: list[tuple[int, int, int]] = []  # (file start, file end, slot), in order
        self.pins: collections.Counter = collections.Counter()
        self.read_to = self.released = start

    def close(self) -> None:
        os.close(self.descriptor)

    def _reclaim(self) -> None:
        keep = []
        for segment in self.held:
            if segment[1] <= self.released and not self.pins[segment[2]]:
                self.free.append(segment[2])
            else:
                keep.append(segment)
        self.held = keep

    def _fill(self, end: int) -> None:
        end = min(end, self.size)
        while self.read_to < end:
            # Bytes released before they were read (others' images) are skipped.
            begin = max(self.read_to, self.released)
            while not self.free:
                self._reclaim()
                if not self.free and not self.wait():
                    raise ArchiveError(f"internal: no slot free to read byte {begin}")
            slot = self.free.pop()
            length = min(self.slot_bytes, self.size - begin)
            base = slot * self.slot_bytes
            read_into(self.descriptor, self.buffer[base:base + length], begin)
            self.held.append((begin, begin + length, slot))
            self.read_to = begin + length

    def segment_end(self, offset: int) -> int:
        """Where the segment that holds (or will hold) byte `offset` ends."""
        for begin, end, _ in self.held:
            if begin <= offset < end:
                return end
        begin = max(self.read_to, self.released)
        return begin + ((offset - begin) // self.slot_bytes + 1) * self.slot_bytes

    def locate(self, offset: int, size: int) -> tuple[int, int]:
        """(slot, position in `buffer`) of file[offset:offset + size], which lies in one
        segment (`segment_end`)."""
        self._fill(offset + size)
        for begin, end, slot in self.held:
            if begin <= offset and offset + size <= end:
                return slot, slot * self.slot_bytes + offset - begin
        raise ArchiveError(f"internal: bytes {offset}+{size} are not in one segment")

    def get(self, offset: int, size: int) -> bytes:
        """file[offset:offset + size] (shorter at the end of the file)."""
        if offset < self.released:
            raise ArchiveError(f"internal: a read at byte {offset}, behind byte "
                               f"{self.released} already released")
        end = min(offset + size, self.size)
        rest = b""
        if end - offset > self.slot_bytes:
            # An image larger than a slot: what is read already, and the rest on its own.
            after = max(self.read_to, offset)
            view = memoryview(bytearray(end - after))
            read_into(self.descriptor, view, after)
            rest, end = view.tobytes(), after
        else:
            self._fill(end)
        parts = []
        for begin, stop, slot in self.held:
            low, high = max(begin, offset), min(stop, end)
            if low < high:
                base = slot * self.slot_bytes - begin
                parts.append(self.buffer[base + low:base + high])
        return b"".join([*parts, rest])

    def pin(self, slot: int) -> None:
        self.pins[slot] += 1

    def unpin(self, slot: int) -> None:
        self.pins[slot] -= 1
        self._reclaim()

    def release(self, offset: int) -> None:
        """The bytes before `offset` are not needed any more."""
        self.released = max(self.released, offset)
        self._reclaim()


class Window:
    """file[base:base + size] of a `Forward` as a file object (for `tarfile`)."""

    def __init__(self, reader: Forward, base: int, size: int):
        self.reader, self.base, self.size, self.position = reader, base, size, 0

    def read(self, size: int = -1) -> bytes:
        left = max(0, self.size - self.position)
        size = left if size is None or size < 0 else min(size, left)
        data = self.reader.get(self.base + self.position, size)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset + (self.position if whence == 1 else
                                  self.size if whence == 2 else 0)
        return self.position

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return True


class Findings:
    """What the walk found besides images: members that are not images, where reading
    stopped early (the first damage)."""

    def __init__(self, not_images: list[dict] | None = None, damage: str = ""):
        self.not_images = not_images if not_images is not None else []
        self.damage = damage


def _inner_files(reader: Forward, path: Path, start: int, size: int, where: str,
                 not_images: list[dict]) -> Iterator[tuple[str, int, int]]:
    """(name, data offset in the file, size) of the tar at file[start:start + size]:
    plain headers from memory, `tarfile` from the first other one on."""
    position, files, last = 0, {}, "its start"
    while position + BLOCK <= size:
        header = reader.get(start + position, BLOCK)
        if position and header == tarfile.NUL * BLOCK:
            return
        plain = plain_header(header)
        if plain is None:
            break
        name, length = plain
        end = position + BLOCK + -(-length // BLOCK) * BLOCK
        if end > size:
            break
        files[name] = (position + BLOCK, length)
        yield name, start + position + BLOCK, length
        last = f"member {where}/{name}"
        position = end
    window = Window(reader, start, size)
    window.seek(position)  # tarfile goes on from here as if it had read the headers before
    inner = _open_tar(window, path, where)
    for name, offset, length in _tar_files(inner, path, not_images, where, start, last=last,
                                           files=files):
        yield name, start + offset, length


def _top(reader: Forward, path: Path, start: int, last: str, not_images: list[dict]
         ) -> Iterator[tuple[str, int, int, int]]:
    """(name, data offset, size, next header's offset) of the archive's top-level members
    from `start` (0, or a cut of an earlier run, after `last`): plain headers from memory
    (a val tar's 50,000), `tarfile` from the first other one on."""
    position, files = start, {}
    while position + BLOCK <= reader.size:
        header = reader.get(position, BLOCK)
        plain = None if header == tarfile.NUL * BLOCK else plain_header(header)
        if plain is None:
            break
        name, length = plain
        end = position + BLOCK + -(-length // BLOCK) * BLOCK
        if end > reader.size:
            break
        files[name] = (position + BLOCK, length)
        yield name, position + BLOCK, length, end
        last = f"member {name}"
        position = end
    window = Window(reader, 0, reader.size)
    window.seek(position)  # tarfile goes on from here as if it had read the headers before
    top = _open_tar(window, path)
    yield from ((name, offset, size, top.offset) for name, offset, size in _tar_files(
        top, path, not_images, "", 0, last=last, files=files))


def _until_damage(entries: Iterator[tuple], found: Findings) -> Iterator[tuple]:
    """`entries` up to the first damage of the outer tar, which `found` records."""
    while True:
        try:
            entry = next(entries, None)
        except DamagedArchive as error:
            found.damage = str(error)
            return
        if entry is None:
            return
        yield entry


def walk_train(reader: Forward, path: Path, start: int, last: str, found: Findings):
    """The train tar's images as (WNID, base name, offset, size), in archive order, each
    inner tar followed by its cut (None, offset of the next outer header, 0, `last`).

    Damage is recorded in `found` (the first only) as indexing with `allow_incomplete`
    does: an inner tar's stops that tar, the outer tar's the walk."""
    file_size = reader.size
    for inner_name, inner_offset, inner_size, cut in _until_damage(
            _top(reader, path, start, last, found.not_images), found):
        if inner_offset + inner_size > file_size:
            continue  # cut by a truncation, which the outer iteration reports next
        wnid = Path(inner_name).stem
        if not WNID.fullmatch(wnid):
            raise ArchiveError(f"{path}: member {inner_name} is not a per-class "
                               f"n########.tar")
        try:
            for name, offset, size in _inner_files(reader, path, inner_offset, inner_size,
                                                   inner_name, found.not_images):
                if _base_name(name).startswith("."):
                    found.not_images.append({"member": f"{inner_name}/{name}",
                                             "reason": _HIDDEN})
                    continue
                _check_inside(path, file_size, f"{inner_name}/{name}", offset + size)
                yield wnid, _base_name(name), offset, size
        except DamagedArchive as error:
            found.damage = found.damage or str(error)
        yield None, cut, 0, f"member {inner_name}"


def walk_flat(reader: Forward, path: Path, start: int, last: str, found: Findings):
    """A flat tar's images as ("", base name, offset, size), each followed by its cut."""
    file_size = reader.size
    for name, offset, size, cut in _until_damage(
            _top(reader, path, start, last, found.not_images), found):
        if _base_name(name).startswith("."):
            found.not_images.append({"member": name, "reason": _HIDDEN})
        else:
            _check_inside(path, file_size, name, offset + size)
            yield "", _base_name(name), offset, size
        yield None, cut, 0, f"member {name}"
