"""Reading the ILSVRC-2012 archives in place: the devkit's labels and the tars' members.

Nothing is extracted.  Indexing reads only the 512-byte tar headers (seeking over the
image data), and records where each image's bytes lie in the archive file, so any
image can later be read with one seek, whatever the size of its class's inner tar.

The Kaggle layout (an extracted `ILSVRC/Data/CLS-LOC/{train,val,test}` with
`LOC_synset_mapping.txt` and `LOC_val_solution.csv`) is read the same way, one file
per image, and gives the same shards.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import tarfile
from pathlib import Path

import scipy.io

from tfrecords_tools import schema
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import Member, member_reader  # noqa: F401 (part of this API)

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TEST_TAR_GLOB = "ILSVRC2012_img_test*.tar"
KAGGLE_SYNSETS = "LOC_synset_mapping.txt"
KAGGLE_VAL = "LOC_val_solution.csv"
KAGGLE_IMAGES = Path("ILSVRC", "Data", "CLS-LOC")
_WNID = re.compile(r"n\d{8}")
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)\.")


@dataclasses.dataclass(frozen=True)
class Archives:
    """Where the archives of each split are; None where a split is not available.

    A split's source is a tar or, in the Kaggle layout, a directory; `devkit` is the
    devkit tar.gz or Kaggle's LOC_synset_mapping.txt.
    """

    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    devkit: Path | None = None

    @classmethod
    def find(cls, directory: str | Path) -> Archives:
        """The archives under their ILSVRC-2012 names in `directory`, or its Kaggle layout."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArchiveError(f"{directory}: no such directory of ILSVRC archives")
        if (directory / KAGGLE_SYNSETS).exists():
            images = directory / KAGGLE_IMAGES
            return cls(*(images / name if (images / name).is_dir() else None
                         for name in ("train", "val", "test")), directory / KAGGLE_SYNSETS)

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
        if not Path(path).exists():
            raise ArchiveError(f"{path}: the {split} archive does not exist")
        return Path(path)


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
    if path.name == KAGGLE_SYNSETS:
        return _read_kaggle_labels(path)
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


def _read_kaggle_labels(path: Path) -> Devkit:
    """Kaggle's synset list and val solution as a devkit (IDs made up: label + 1)."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        wnid, _, words = line.partition(" ")
        if not _WNID.fullmatch(wnid):
            raise ArchiveError(f"{path}:{number}: expected 'WNID words', got {line!r}")
        entries.append((wnid, words))
    classes = ClassIndex(*(tuple(column) for column in zip(*sorted(entries), strict=True)))
    solution = path.with_name(KAGGLE_VAL)
    truth = {}
    if solution.exists():
        lines = solution.read_text(encoding="utf-8").splitlines()[1:]  # ImageId,PredictionString
        for number, line in enumerate(lines, 2):
            image_id, _, boxes = line.partition(",")
            match = _VAL_NUMBER.match(image_id + ".")
            wnid = boxes.split(" ", 1)[0]
            if not match or wnid not in classes.label_of:
                raise ArchiveError(f"{solution}:{number}: expected 'ILSVRC2012_val_%08d,WNID ...'"
                                   f", got {line!r}")
            truth[int(match[1])] = classes.label_of[wnid] + 1
    if sorted(truth) != list(range(1, len(truth) + 1)):
        raise ArchiveError(f"{solution}: the val images are not numbered 1..{len(truth)}")
    return Devkit(classes, {label + 1: wnid for label, wnid in enumerate(classes.wnids)},
                  tuple(truth[number] for number in sorted(truth)))


def _check_inside(path: Path, file_size: int, name: str, end: int) -> None:
    if end > file_size:
        raise ArchiveError(f"{path}: truncated: member {name} ends at byte {end} but the file "
                           f"has {file_size} bytes")


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

    if path.is_dir():
        found = [(wnid.name, Member(image.name, 0, image.stat().st_size, schema.UNLABELED,
                                    f"{wnid.name}/{image.name}"))
                 for wnid in sorted(path.iterdir()) if wnid.is_dir()
                 for image in sorted(wnid.iterdir()) if image.is_file()]
        return _label_train(path, found, classes)
    file_size = path.stat().st_size
    found: list[tuple[str, Member]] = []
    with open(path, "rb") as raw:
        outer = _open_tar(raw, path)
        inner_tars = [m for m in _members(outer, path) if m.isfile()]
        for inner_info in tqdm(inner_tars, desc=f"indexing {path.name}", unit="class",
                               disable=not progress, leave=False):
            _check_inside(path, file_size, inner_info.name,
                          inner_info.offset_data + inner_info.size)
            wnid = Path(inner_info.name).stem
            if not _WNID.fullmatch(wnid):
                raise ArchiveError(f"{path}: member {inner_info.name} is not a per-class "
                                   f"n########.tar")
            images = _plain_members(raw, inner_info.offset_data, inner_info.size)
            if images is None:
                inner = _open_tar(outer.extractfile(inner_info), path, inner_info.name)
                images = [(image.name, image.offset_data, image.size)
                          for image in _members(inner, path, inner_info.name)
                          if image.isfile()]
            for name, offset, size in images:
                _check_inside(path, file_size, f"{inner_info.name}/{name}",
                              inner_info.offset_data + offset + size)
                found.append((wnid, Member(Path(name).name, inner_info.offset_data + offset,
                                           size, schema.UNLABELED)))
    return _label_train(path, found, classes)


_USTAR = (b"ustar\x0000", b"ustar  \0")  # POSIX, GNU


def _plain_members(raw, start: int, size: int) -> list[tuple[str, int, int]] | None:
    """(name, data offset, size) of the files of the tar at archive[start:start + size],
    if it is a plain one, as ILSVRC's inner tars are: ustar headers of regular files,
    ended by a zero block.  None for anything else (long names, pax headers, damage), which
    `tarfile` then reads, and words the errors of: a fifth of its cost per header, on a
    million headers."""
    images, position, block = [], 0, tarfile.BLOCKSIZE
    while position + block <= size:
        header = os.pread(raw.fileno(), block, start + position)
        if header == tarfile.NUL * block:
            return images or None  # tarfile refuses a tar without members
        if (len(header) < block or header[156:157] not in (b"0", b"\0")
                or header[257:265] not in _USTAR or header[124] & 0x80):
            return None
        try:
            name = _field(header[:100]).decode()
            prefix = _field(header[345:500]).decode()
            length = int(_field(header[124:136]).strip() or b"0", 8)
            checksum = int(_field(header[148:156]).strip() or b"0", 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 256 + sum(header[156:]):
            return None
        if prefix and header[257:265] == _USTAR[0]:
            name = f"{prefix}/{name}"
        if not name or name.endswith("/"):  # a directory, to tarfile
            return None
        images.append((name, position + block, length))
        position += block + -(-length // block) * block
    return None


def _field(data: bytes) -> bytes:
    return data.split(b"\0", 1)[0]


def _label_train(path: Path, found: list[tuple[str, Member]],
                 classes: ClassIndex | None) -> tuple[list[Member], ClassIndex]:
    wnids = sorted({wnid for wnid, _ in found})
    if classes is None:
        classes = ClassIndex(tuple(wnids), tuple(wnids))
    known = set(classes.wnids)
    strangers = [w for w in wnids if w not in known]
    if strangers:
        raise ArchiveError(f"{path}: member {strangers[0]} is not a class of the devkit "
                           f"({len(strangers)} such classes)")
    label_of = classes.label_of
    return [Member(m.name, m.offset, m.size, label_of[w], m.path) for w, m in found], classes


def index_flat(path: Path) -> list[Member]:
    """The members of a flat tar or directory (val, test), sorted by name."""
    if path.is_dir():
        return [Member(image.name, 0, image.stat().st_size, schema.UNLABELED, image.name)
                for image in sorted(path.iterdir()) if image.is_file()]
    file_size = path.stat().st_size
    members = []
    with open(path, "rb") as raw:
        for info in _members(_open_tar(raw, path), path):
            if info.isfile():
                _check_inside(path, file_size, info.name, info.offset_data + info.size)
                members.append(Member(Path(info.name).name, info.offset_data, info.size,
                                      schema.UNLABELED))
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
