import pytest

from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import Member, MemberReader


def test_reads_from_a_file_by_offset_and_from_a_directory(tmp_path):
    (tmp_path / "archive").write_bytes(b"headerIMAGE-BYTEStrailer")
    with MemberReader(tmp_path / "archive") as reader:
        assert reader.read(Member("a.JPEG", 6, 11, 0)) == b"IMAGE-BYTES"
    (tmp_path / "n01440764").mkdir()
    (tmp_path / "n01440764" / "b.JPEG").write_bytes(b"FILE")
    with MemberReader(tmp_path) as reader:
        assert reader.read(Member("b.JPEG", 0, 4, 0, "n01440764/b.JPEG")) == b"FILE"


def test_an_archive_shrunk_during_the_run_names_the_member(tmp_path):
    (tmp_path / "archive").write_bytes(b"short")
    with MemberReader(tmp_path / "archive") as reader, pytest.raises(
            ArchiveError, match=r"archive: member gone.JPEG has 2 of its 10 bytes"):
        reader.read(Member("gone.JPEG", 3, 10, 0))
