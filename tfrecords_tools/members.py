"""Where an image lies in its archive, and reading it back: the worker processes' input.

Free of TensorFlow, so that worker processes import it in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from tfrecords_tools.errors import ArchiveError


@dataclasses.dataclass(frozen=True, slots=True)  # 1.28 million of them for ILSVRC train
class Member:
    """One image inside an archive: its bytes are archive[offset:offset + size]."""

    name: str  # base name, e.g. n01440764_10026.JPEG
    offset: int
    size: int
    label: int  # 0-based sorted-WNID index, or schema.UNLABELED
    path: str = ""  # in a directory source, the file's path under it


class MemberReader:
    """Reads members' bytes: one seek in a tar, one file in a directory (Kaggle layout)."""

    def __init__(self, source: Path):
        self.source = Path(source)
        self.handle = None if self.source.is_dir() else open(self.source, "rb")  # noqa: SIM115

    def read(self, member: Member) -> bytes:
        if self.handle is None:
            data = (self.source / member.path).read_bytes()
        else:
            self.handle.seek(member.offset)
            data = self.handle.read(member.size)
        if len(data) != member.size:
            raise ArchiveError(f"{self.source}: member {member.name} has {len(data)} of its "
                               f"{member.size} bytes; did the archive change during the run?")
        return data

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def __enter__(self) -> MemberReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def member_reader(source: Path) -> Iterator[Callable[[Member], bytes]]:
    """`MemberReader(source).read`, closed on leaving the block."""
    with MemberReader(source) as reader:
        yield reader.read
