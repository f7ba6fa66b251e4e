"""The task of a worker process: read a chunk of members and re-encode them.

Workers read the archive themselves (each with its own handle), so the parent process
only orders the results and writes them: image bytes never cross a process boundary.
"""

from __future__ import annotations

from pathlib import Path

from tfrecords_tools.images import ImageOptions, Outcome, reencode
from tfrecords_tools.members import Member, MemberReader

_readers: dict[Path, MemberReader] = {}  # open for the worker's life, one per archive


def convert_members(reader: MemberReader, members: list[Member],
                    options: ImageOptions) -> list[Outcome]:
    return [reencode(reader.read(member), options) for member in members]


def convert_chunk(source: Path, members: list[Member], options: ImageOptions) -> list[Outcome]:
    """A worker task; several images each, so that inter-process overhead stays small."""
    if source not in _readers:
        _readers[source] = MemberReader(source)
    return convert_members(_readers[source], members, options)
