"""Reading an ILSVRC tar once, front to back, with no index first: its images as their
headers come.

`Forward` reads the archive file forward only, a few MB at a time, and keeps the bytes
from the earliest one still needed (`release`) to the furthest read, so the headers and
the images come out of the same reads.  `walk_train` and `walk_flat` yield the images
of the train tar (in its per-class inner tars) and of a flat tar (val, test), each
followed by a cut: where a later run can start again (between outer members).  Plain
ustar headers (ILSVRC's inner tars) are parsed from memory; anything else (long names,
pax headers, links, damage) goes to `tarfile` from that header on, with the state it
needs carried over, so errors name the same bytes and members as indexing does.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
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

READ_BYTES = 4 << 20  # archive bytes read at once
BLOCK = tarfile.BLOCKSIZE


class Forward:
    """The archive file, read forward only: `data` holds file[start:start + len(data)]."""

    def __init__(self, path: Path, start: int = 0):
        self.descriptor = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.descriptor).st_size
        self.start = start
        self.data = bytearray()

    def close(self) -> None:
        os.close(self.descriptor)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def _fill(self, end: int) -> None:
        end = min(end, self.size)
        while self.end < end:
            got = os.pread(self.descriptor, max(READ_BYTES, end - self.end), self.end)
            if not got:
                break
            self.data += got

    def get(self, offset: int, size: int) -> bytes:
        """file[offset:offset + size] (shorter at the end of the file)."""
        if offset < self.start:
            raise ArchiveError(f"internal: a read at byte {offset}, behind byte {self.start} "
                               f"already released")
        self._fill(offset + size)
        return bytes(self.data[offset - self.start:offset - self.start + size])

    def copy_into(self, target: memoryview, offset: int) -> None:
        """Copies file[offset:offset + len(target)] into `target`."""
        self._fill(offset + len(target))
        if offset < self.start or offset + len(target) > self.end:
            raise ArchiveError(f"archive ended at byte {self.end}: did it change during the "
                               f"run?")
        with memoryview(self.data) as view:
            target[:] = view[offset - self.start:offset - self.start + len(target)]

    def release(self, offset: int) -> None:
        """The bytes before `offset` are not needed any more."""
        drop = min(offset, self.end) - self.start
        if drop > 0:
            del self.data[:drop]
            self.start += drop


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
    from `start` (0, or a cut of an earlier run, after `last`)."""
    window = Window(reader, 0, reader.size)
    window.seek(start)
    top = _open_tar(window, path)
    yield from ((name, offset, size, top.offset)
                for name, offset, size in _tar_files(top, path, not_images, "", 0, last=last))


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
