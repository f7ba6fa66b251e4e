"""Reading the ILSVRC-2012 archives in place: the devkit's labels and the tars' members.

Nothing is extracted.  Indexing reads only the 512-byte tar headers (seeking over the
image data), and records where each image's bytes lie in the archive file, so any
image can later be read with one seek, whatever the size of its class's inner tar.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import tarfile
from pathlib import Path

import scipy.io

from tfrecords_tools import schema
from tfrecords_tools.errors import ArchiveError

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TEST_TAR_GLOB = "ILSVRC2012_img_test*.tar"
_WNID = re.compile(r"n\d{8}")
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)\.")


@dataclasses.dataclass(frozen=True)
class Archives:
    """Where the archives of each split are; None where a split is not available."""

    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    devkit: Path | None = None

    @classmethod
    def find(cls, directory: str | Path) -> Archives:
        """The archives under their ILSVRC-2012 names in `directory`."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArchiveError(f"{directory}: no such directory of ILSVRC archives")

        def existing(name: str) -> Path | None:
            return directory / name if (directory / name).exists() else None

        tests = sorted(directory.glob(TEST_TAR_GLOB))
        return cls(train=existing(TRAIN_TAR), validation=existing(VAL_TAR),
                   test=tests[0] if tests else None, devkit=existing(DEVKIT))

    def path_for(self, split: str) -> Path:
        path = getattr(self, split)
        if path is None:
            expected = {"train": TRAIN_TAR, "validation": VAL_TAR, "test": TEST_TAR_GLOB}[split]
            raise ArchiveError(f"no archive for the {split} split: expected {expected}")
        if not Path(path).is_file():
            raise ArchiveError(f"{path}: the {split} archive does not exist")
        return Path(path)


@dataclasses.dataclass(frozen=True, slots=True)  # 1.28 million of them for ILSVRC train
class Member:
    """One image inside an archive: its bytes are archive[offset:offset + size]."""

    name: str  # base name, e.g. n01440764_10026.JPEG
    offset: int
    size: int
    label: int = schema.UNLABELED


@dataclasses.dataclass(frozen=True)
class ClassIndex:
    """The 1000 classes: label i is the i-th WNID in sorted order (DESIGN.md §2)."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    @functools.cached_property
    def label_of(self) -> dict[str, int]:
        return {wnid: label for label, wnid in enumerate(self.wnids)}

    def labels_txt(self) -> str:
        return "".join(f"{w}\t{n}\n" for w, n in zip(self.wnids, self.names, strict=True))


@dataclasses.dataclass(frozen=True)
class Devkit:
    classes: ClassIndex
    wnid_of_id: dict[int, str]  # ILSVRC2012_ID -> WNID, leaves only
    ground_truth: tuple[int, ...]  # ILSVRC2012_ID of val image 1, 2, ...


def _devkit_member(archive: tarfile.TarFile, path: Path, suffix: str) -> bytes:
    for member in archive.getmembers():
        if member.isfile() and member.name.endswith(suffix):
            return archive.extractfile(member).read()
    raise ArchiveError(f"{path}: has no member ending in {suffix!r}; is this the ILSVRC2012 "
                       f"development kit?")


def read_devkit(path: str | Path) -> Devkit:
    """The leaf synsets of `data/meta.mat` and the validation ground truth."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: the devkit does not exist")
    try:
        with tarfile.open(path) as archive:
            meta = _devkit_member(archive, path, "data/meta.mat")
            truth = _devkit_member(archive, path, "data/ILSVRC2012_validation_ground_truth.txt")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ArchiveError(f"{path}: unreadable devkit archive ({error})") from None
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        leaves = sorted((str(s["WNID"]), str(s["words"]), int(s["ILSVRC2012_ID"]))
                        for s in synsets if int(s["num_children"]) == 0)
    except (KeyError, ValueError, TypeError) as error:
        raise ArchiveError(f"{path}: data/meta.mat has no readable 'synsets' "
                           f"({error!r})") from None
    try:
        ground_truth = tuple(int(line) for line in truth.decode().split())
    except ValueError as error:
        raise ArchiveError(f"{path}: data/ILSVRC2012_validation_ground_truth.txt: "
                           f"{error}") from None
    classes = ClassIndex(tuple(w for w, _, _ in leaves), tuple(n for _, n, _ in leaves))
    wnid_of_id = {i: w for w, _, i in leaves}
    unknown = sorted(set(ground_truth) - set(wnid_of_id))
    if unknown:
        raise ArchiveError(f"{path}: the validation ground truth uses ILSVRC2012_IDs "
                           f"{unknown[:5]} that are not leaf synsets of data/meta.mat")
    return Devkit(classes, wnid_of_id, ground_truth)


def _check_inside(member: tarfile.TarInfo, base: int, path: Path, file_size: int,
                  where: str) -> None:
    end = base + member.offset_data + member.size
    if end > file_size:
        raise ArchiveError(f"{path}: truncated: member {where}{member.name} ends at byte {end} "
                           f"but the file has {file_size} bytes")


def _open_tar(fileobj, path: Path, where: str = "") -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=fileobj, mode="r:")
    except tarfile.TarError as error:
        raise ArchiveError(f"{path}: {where or 'archive'} is not a readable tar "
                           f"({error})") from None


def _members(archive: tarfile.TarFile, path: Path, where: str = ""):
    last = "its start"
    try:
        for member in archive:
            yield member
            last = f"member {where}{'/' if where else ''}{member.name}"
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(f"{path}: damaged or truncated after {last} ({error})") from None


def index_train(path: Path, classes: ClassIndex | None = None,
                progress: bool = True) -> tuple[list[Member], ClassIndex]:
    """Members of the per-class inner tars, labelled through the sorted WNIDs.

    Without `classes` (no devkit), the classes are the inner tars' WNIDs, named by WNID.
    """
    from tqdm import tqdm

    file_size = path.stat().st_size
    found: list[tuple[str, Member]] = []
    with open(path, "rb") as raw:
        outer = _open_tar(raw, path)
        inner_tars = [m for m in _members(outer, path) if m.isfile()]
        for inner_info in tqdm(inner_tars, desc=f"indexing {path.name}", unit="class",
                               disable=not progress, leave=False):
            _check_inside(inner_info, 0, path, file_size, "")
            wnid = Path(inner_info.name).stem
            if not _WNID.fullmatch(wnid):
                raise ArchiveError(f"{path}: member {inner_info.name} is not a per-class "
                                   f"n########.tar")
            inner = _open_tar(outer.extractfile(inner_info), path, inner_info.name)
            for image in _members(inner, path, inner_info.name):
                if image.isfile():
                    _check_inside(image, inner_info.offset_data, path, file_size,
                                  f"{inner_info.name}/")
                    found.append((wnid, Member(Path(image.name).name,
                                               inner_info.offset_data + image.offset_data,
                                               image.size)))
    wnids = sorted({wnid for wnid, _ in found})
    if classes is None:
        classes = ClassIndex(tuple(wnids), tuple(wnids))
    known = set(classes.wnids)
    strangers = [w for w in wnids if w not in known]
    if strangers:
        raise ArchiveError(f"{path}: member {strangers[0]}.tar is not a class of the devkit "
                           f"({len(strangers)} such classes)")
    return [dataclasses.replace(m, label=classes.label_of[w]) for w, m in found], classes


def index_flat(path: Path) -> list[Member]:
    """The members of a flat tar (val, test), sorted by name."""
    file_size = path.stat().st_size
    members = []
    with open(path, "rb") as raw:
        for info in _members(_open_tar(raw, path), path):
            if info.isfile():
                _check_inside(info, 0, path, file_size, "")
                members.append(Member(Path(info.name).name, info.offset_data, info.size))
    return sorted(members, key=lambda m: m.name)


def label_validation(members: list[Member], devkit: Devkit, path: Path,
                     devkit_path: Path) -> list[Member]:
    """Val labels: `ILSVRC2012_val_%08d` is line %d of the ground truth."""
    if len(members) != len(devkit.ground_truth):
        raise ArchiveError(f"{devkit_path} does not match {path}: the ground truth has "
                           f"{len(devkit.ground_truth)} lines, the val tar "
                           f"{len(members)} images")
    labels = devkit.classes.label_of
    labelled = []
    for member in members:
        match = _VAL_NUMBER.match(member.name)
        if not match or not 1 <= int(match[1]) <= len(devkit.ground_truth):
            raise ArchiveError(f"{path}: member {member.name} is not one of the "
                               f"ILSVRC2012_val_%08d images of the ground truth in {devkit_path}")
        wnid = devkit.wnid_of_id[devkit.ground_truth[int(match[1]) - 1]]
        labelled.append(dataclasses.replace(member, label=labels[wnid]))
    return labelled


def read_member(handle, member: Member) -> bytes:
    handle.seek(member.offset)
    return handle.read(member.size)


