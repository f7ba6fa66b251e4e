"""`walk.Forward`: the archive read forward only, straight into the shared slots; every
byte it hands out checked against the file itself."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfrecords_tools import walk
from tfrecords_tools.errors import ArchiveError

SLOT = 64


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "archive.tar"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, np.uint8).tobytes())
    return path


def reader_of(path, slots=3, start=0, wait=lambda: False):
    buffer = memoryview(bytearray(slots * SLOT))
    return walk.Forward(path, start, buffer, SLOT, wait), buffer


def test_get_and_locate_give_the_files_bytes_across_segments(archive):
    data = archive.read_bytes()
    reader, buffer = reader_of(archive)
    try:
        assert reader.get(60, 10) == data[60:70]  # across the first two segments
        assert reader.segment_end(10) == 64 and reader.segment_end(70) == 128
        assert reader.segment_end(300) == 320  # not read yet: where its segment will end
        slot, position = reader.locate(70, 50)  # inside the second segment
        assert bytes(buffer[position:position + 50]) == data[70:120]
        assert position == slot * SLOT + 70 - 64  # the kernel's copy, nobody else's
        with pytest.raises(ArchiveError, match="not in one segment"):
            reader.locate(120, 20)
        assert reader.get(100, 200) == data[100:300]  # larger than a slot: on its own
        reader.release(980)
        assert reader.get(990, 50) == data[990:]  # shorter at the end of the file
    finally:
        reader.close()


def test_a_slot_is_read_into_again_only_once_released_and_unpinned(archive):
    data = archive.read_bytes()
    waited = []
    reader, buffer = reader_of(archive, slots=2, wait=lambda: waited.append(1) or False)
    try:
        slot, position = reader.locate(0, 60)
        reader.pin(slot)
        reader.release(64)
        reader.get(64, 10)  # the second slot
        with pytest.raises(ArchiveError, match="no slot free"):
            reader.get(128, 10)  # the first is pinned by a batch in flight
        assert waited == [1]
        assert bytes(buffer[position:position + 60]) == data[:60]  # not overwritten
        reader.unpin(slot)
        reader.release(128)
        assert reader.get(128, 10) == data[128:138]
        with pytest.raises(ArchiveError, match="behind byte 128 already released"):
            reader.get(100, 10)
    finally:
        reader.close()


def test_released_bytes_are_skipped_unread(archive, monkeypatch):
    reads = []
    original = os.preadv

    def preadv(descriptor, buffers, offset):
        reads.append(offset)
        return original(descriptor, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    data = archive.read_bytes()
    reader, _ = reader_of(archive, start=100)
    try:
        assert reader.get(100, 4) == data[100:104]
        reader.release(500)  # others' images: not needed
        assert reader.get(500, 4) == data[500:504]
        assert reads == [100, 500]  # forward, and nothing of 164..500 read
    finally:
        reader.close()


@pytest.mark.parametrize("slot_bytes", [16 << 10, 64 << 10])
def test_small_slots_and_others_images_give_the_same_shards(sample_archives, tmp_path,
                                                            monkeypatch, slot_bytes):
    """The walk with slots smaller than the sample's images (each then larger than a
    slot) or a few of them (images across segments), converting one shard in eight, so
    that long runs of others' images are skipped: the shards are the usual ones."""
    from tests.tfrecords_tools.test_convert import _outputs
    from tfrecords_tools import passes
    from tfrecords_tools.convert import convert

    arguments = {"splits": ["train", "validation"], "train_shards": 8,
                 "validation_shards": 8, "size": 32, "processes": 1, "progress": False}
    convert(tmp_path / "reference", sample_archives.directory, **arguments)
    monkeypatch.setattr(passes, "SLOT_BYTES", slot_bytes)
    convert(tmp_path / "out", sample_archives.directory, num_workers=8, worker_index=3,
            **arguments)
    ours = {name: data for name, data in _outputs(tmp_path / "out").items()
            if "-00003-of-" in name}
    assert sorted(ours) == ["train-00003-of-00008", "validation-00003-of-00008"]
    reference = _outputs(tmp_path / "reference")
    assert all(data == reference[name] for name, data in ours.items())
