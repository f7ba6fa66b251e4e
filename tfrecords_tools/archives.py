"""Reading the ILSVRC archives in place: the tars' members, labelled by the devkit (`devkit`).

Nothing is extracted.  Indexing reads only the 512-byte tar headers (seeking over the
image data), and records where each image's bytes lie in the archive file, so any
image can later be read with one seek, whatever the size of its class's inner tar.  The
converter reads the train and val tars without an index, in one pass (`walk`).

ILSVRC-2010's archives have the same shapes; its own files (the released test ground
truth, patch_images.tar) are read by `ilsvrc2010`.

The Kaggle layout (an extracted `ILSVRC/Data/CLS-LOC/{train,val,test}` with
`LOC_synset_mapping.txt` and `LOC_val_solution.csv`) is read the same way, one file
per image, and gives the same shards.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tarfile
from pathlib import Path

from tfrecords_tools import schema
from tfrecords_tools.devkit import (
    KAGGLE_SYNSETS,
    WNID,
    ClassIndex,
    Devkit,
    numbered_wnid,
    refuse_missing,
    unnumbered_reason,
)
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import Member, member_reader  # noqa: F401 (part of this API)

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
TEST_TAR_GLOB = "ILSVRC2012_img_test*.tar"
KAGGLE_IMAGES = Path("ILSVRC", "Data", "CLS-LOC")


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
    #: ILSVRC-2010's extras (`ilsvrc2010`): the test split's labels, replacement images
    test_truth: Path | None = None
    patches: Path | None = None

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


def _check_inside(path: Path, file_size: int, name: str, end: int) -> None:
    """A member cut by the file's end: the tar is damaged there (`--allow-incomplete`
    converts the members before it)."""
    if end > file_size:
        raise DamagedArchive(f"{path}: truncated: member {name} ends at byte {end} but the "
                             f"file has {file_size} bytes")


class DamagedArchive(ArchiveError):
    """Reading a tar stopped before its end (an invalid header, a cut)."""


@dataclasses.dataclass
class Index:
    """What indexing a split's archive found, before labelling (the converter caches it).

    `entries` are (class WNID or "", member base name, offset, size, path) in archive
    order; `not_images` the members that are not read ({"member", "reason"}); `damage`
    where reading stopped early (only with `allow_incomplete`), else ""; `directories`
    the directories of a folder dataset (`folders`), where a class folder may be empty.
    """

    entries: list[tuple[str, str, int, int, str]]
    not_images: list[dict]
    damage: str = ""
    directories: list[str] = dataclasses.field(default_factory=list)


class _Recording:
    """A file object that remembers its last read, for `_tar_files`'s end check."""

    def __init__(self, fileobj):
        # Where the file object stands: a reading that continues one of the same tar
        # starts there, and tarfile then takes it for a header past the start.
        self.fileobj, self.last, self.position = fileobj, b"", fileobj.tell()

    def read(self, size: int = -1) -> bytes:
        self.last = self.fileobj.read(size)
        self.position += len(self.last)
        return self.last

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.fileobj.seek(offset, whence)
        return self.position

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return True


def _open_tar(fileobj, path: Path, where: str = "") -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=_Recording(fileobj), mode="r:")
    except tarfile.TarError as error:
        raise ArchiveError(f"{path}: {where or 'archive'} is not a readable tar "
                           f"({error})") from error


def _tar_files(archive: tarfile.TarFile, path: Path, not_images: list[dict],
               where: str = "", base: int = 0, directories: list[str] | None = None,
               last: str = "its start", files: dict | None = None):
    """(name, data offset, size) of the images of an open tar, in archive order.

    Hard links are read through their target; symbolic links, directories (into
    `directories` where given) and other special members are listed in `not_images`.
    `tarfile` ends its iteration without a word at an invalid header past offset 0, so
    the block after the last member is checked here: it must be the end-of-archive
    marker, else the archive is damaged there (`base` turns the inner tar's offsets into
    the file's).  `last` and `files` (name: (data offset, size)) carry the state of a
    reading of the same tar that this one continues.
    """
    prefix = f"{where}/" if where else ""
    files = {} if files is None else files
    try:
        for member in archive:
            name = f"{prefix}{member.name}"
            if member.isfile():
                files[member.name] = (member.offset_data, member.size)
                yield member.name, member.offset_data, member.size
            elif member.islnk() and member.linkname in files:
                yield (member.name, *files[member.linkname])
            elif member.isdir() and directories is not None:
                directories.append(member.name)
            else:
                kind = ("a symbolic link" if member.issym() else "a hard link to nothing "
                        "before it" if member.islnk() else "a directory" if member.isdir()
                        else "a special file")
                not_images.append({"member": name, "reason": f"{kind}, not an image"})
            last = f"member {name}"
    except (tarfile.TarError, EOFError) as error:
        raise DamagedArchive(f"{path}: damaged or truncated after {last} "
                             f"({error})") from error
    end = archive.offset
    # The block tarfile stopped at, as it read it (read again, it would be a step back).
    block = archive.fileobj.last if archive.fileobj.position == end + len(
        archive.fileobj.last) else b""
    if block != tarfile.NUL * tarfile.BLOCKSIZE:
        what = ("ends without the end-of-archive marker" if not block
                else "has an invalid tar header")
        raise DamagedArchive(f"{path}: {where or 'the archive'} {what} at byte {base + end} "
                             f"(after {last}); reading stopped there: the archive is damaged "
                             f"or truncated")


def _base_name(name: str) -> str:
    # Not Path(name).name: a path object per member is a tenth of the indexing's time.
    return name.rpartition("/")[2]


def _hidden(name: str) -> bool:
    # macOS's AppleDouble `._x.JPEG` and other dot files that copies of the archives pick up.
    return _base_name(name).startswith(".")


_HIDDEN = "a hidden file (a copy's stray, e.g. macOS's ._ files), not an image"


def _keep(name: str, not_images: list[dict], where: str = "") -> bool:
    if _hidden(name):
        not_images.append({"member": f"{where}/{name}" if where else name, "reason": _HIDDEN})
        return False
    return True


def index_train(path: Path, progress: bool = True, allow_incomplete: bool = False) -> Index:
    """The images of the per-class inner tars (or of a Kaggle train directory).

    An outer or inner tar that stops early raises `DamagedArchive` naming the byte where
    reading stopped, unless `allow_incomplete`, which keeps what came before it and
    records where it stopped in `Index.damage`.
    """
    from tfrecords_tools.base.progress import tqdm

    not_images: list[dict] = []
    if path.is_dir():
        entries = [(wnid.name, image.name, 0, image.stat().st_size,
                    f"{wnid.name}/{image.name}")
                   for wnid in sorted(path.iterdir()) if wnid.is_dir()
                   for image in sorted(wnid.iterdir())
                   if image.is_file() and _keep(image.name, not_images, wnid.name)]
        return Index(entries, not_images)
    file_size = path.stat().st_size
    entries: list[tuple[str, str, int, int, str]] = []
    damage = ""
    # One pass, front to back: each inner tar is indexed as the outer iteration reaches it.
    # Unbuffered: a buffered reader reads ahead of the header, which the inner reads then
    # go back over.
    with open(path, "rb", buffering=0) as raw, tqdm(total=file_size, unit="B", unit_scale=True,
                                       desc=f"indexing {path.name}", disable=not progress,
                                       leave=False) as bar:
        outer = _open_tar(raw, path)
        inner_tars = _tar_files(outer, path, not_images)
        while True:
            try:
                found = next(inner_tars, None)
            except DamagedArchive as error:
                if not allow_incomplete:
                    raise
                damage = str(error)
                break
            if found is None:
                break
            inner_name, inner_offset, inner_size = found
            if allow_incomplete and inner_offset + inner_size > file_size:
                continue  # cut by a truncation, which the outer iteration reports next
            _check_inside(path, file_size, inner_name, inner_offset + inner_size)
            wnid = Path(inner_name).stem
            if not WNID.fullmatch(wnid):
                raise ArchiveError(f"{path}: member {inner_name} is not a per-class "
                                   f"n########.tar")
            images = _plain_members(raw, inner_offset, inner_size)
            if images is None:
                images = []
                # By its TarInfo, the one just read: by name, tarfile would first read
                # every header to the end of the archive.
                inner = _open_tar(outer.extractfile(outer.members[-1]), path, inner_name)
                try:
                    images.extend(_tar_files(inner, path, not_images, inner_name, inner_offset))
                except DamagedArchive as error:
                    if not allow_incomplete:
                        raise
                    damage = damage or str(error)
            for name, offset, size in images:
                if not _keep(name, not_images, inner_name):
                    continue
                _check_inside(path, file_size, f"{inner_name}/{name}",
                              inner_offset + offset + size)
                entries.append((wnid, _base_name(name), inner_offset + offset, size, ""))
            bar.update(inner_offset + inner_size - bar.n)
    return Index(entries, not_images, damage)


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
        plain = plain_header(header)
        if plain is None:
            return None
        name, length = plain
        images.append((name, position + block, length))
        position += block + -(-length // block) * block
    return None


def plain_header(header: bytes) -> tuple[str, int] | None:
    """(name, size) of a plain ustar header of a regular file, else None (anything else
    is `tarfile`'s to read)."""
    if (len(header) < tarfile.BLOCKSIZE or header[156:157] not in (b"0", b"\0")
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
    return name, length


def _field(data: bytes) -> bytes:
    return data.split(b"\0", 1)[0]


def label_train(path: Path, index: Index, classes: ClassIndex | None = None
                ) -> tuple[list[Member], ClassIndex]:
    """The train members labelled through the sorted WNIDs.

    Without `classes` (no devkit), the classes are the inner tars' WNIDs, named by WNID.
    """
    wnids = sorted({wnid for wnid, *_ in index.entries})
    if classes is None:
        classes = ClassIndex(tuple(wnids), tuple(wnids))
    known = set(classes.wnids)
    strangers = [w for w in wnids if w not in known]
    if strangers:
        raise ArchiveError(f"{path}: member {strangers[0]} is not a class of the devkit "
                           f"({len(strangers)} such classes)")
    label_of = classes.label_of
    return [Member(name, offset, size, label_of[wnid], member_path)
            for wnid, name, offset, size, member_path in index.entries], classes


def train_shortfall(members: list[Member], classes: ClassIndex,
                    devkit: Devkit | None) -> dict[str, list[int]]:
    """{WNID: [images found, images expected]} for every class short of the devkit's
    `num_train_images` (or with no image at all where the devkit gives no counts)."""
    found = collections.Counter(m.label for m in members)
    expected = devkit.train_counts if devkit else {}
    return {wnid: [found[label], expected.get(wnid, 1)]
            for label, wnid in enumerate(classes.wnids)
            if (found[label] != expected[wnid] if wnid in expected else found[label] == 0)}


def index_flat(path: Path, allow_incomplete: bool = False) -> Index:
    """The members of a flat tar or directory (val, test), in archive order."""
    not_images: list[dict] = []
    if path.is_dir():
        return Index([("", image.name, 0, image.stat().st_size, image.name)
                      for image in sorted(path.iterdir())
                      if image.is_file() and _keep(image.name, not_images)], not_images)
    file_size = path.stat().st_size
    entries, damage = [], ""
    with open(path, "rb") as raw:
        try:
            for name, offset, size in _tar_files(_open_tar(raw, path), path, not_images):
                if _keep(name, not_images):
                    _check_inside(path, file_size, name, offset + size)
                    entries.append(("", _base_name(name), offset, size, ""))
        except DamagedArchive as error:
            if not allow_incomplete:
                raise
            damage = str(error)
    return Index(entries, not_images, damage)


def flat_members(index: Index) -> list[Member]:
    return [Member(name, offset, size, schema.UNLABELED, member_path)
            for _, name, offset, size, member_path in index.entries]


def label_validation(index: Index, devkit: Devkit, path: Path,
                     allow_incomplete: bool = False, split: str = "validation"
                     ) -> tuple[list[Member], list[int]]:
    """Val labels (`ILSVRC2012_val_%08d` is line %d of the ground truth), and the
    ground-truth lines with no image in the val tar; of the test tar where the devkit
    has the test ground truth (ILSVRC-2010's, `ILSVRC2010_test_%08d`).

    Members with other names are moved to `index.not_images`.  Missing images are an
    error naming the tar, unless `allow_incomplete`.
    """
    labels, truth = devkit.classes.label_of, devkit.truth(split)
    labelled, seen = [], set()
    for member in flat_members(index):
        number = devkit.number_of(split, member.name)
        if number is None:
            index.not_images.append({"member": member.name,
                                     "reason": unnumbered_reason(devkit, split)})
            continue
        labelled.append(dataclasses.replace(member, label=labels[numbered_wnid(
            devkit, split, path, member.name, number)]))
        seen.add(number)
    missing = [n for n in range(1, len(truth) + 1) if n not in seen]
    if missing and not allow_incomplete:
        refuse_missing(path, devkit, split, len(seen), missing, index.damage)
    return labelled, missing


def _tree_name(name: str) -> str:
    # `tar -C photos -cf photos.tar .` names its members ./train/...
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def index_tree(path: Path, allow_incomplete: bool = False) -> Index:
    """Every file of a directory tree or a tar, by its path in it (a folder dataset).

    `entries` are ("", path, offset, size, path to read in a directory, "" in a tar) in
    sorted (directory) or archive (tar) order, `directories` the folders.  Hidden files
    and folders are listed in `not_images` and not entered; so are symbolic links, in a
    directory as in a tar, so that a tree and its tar give the same shards (hard links
    are files).  A tar that stops early raises `DamagedArchive` unless
    `allow_incomplete`, which records it in `damage`.
    """
    not_images: list[dict] = []
    directories: list[str] = []
    if path.is_dir():
        return Index(_walk(path, "", not_images, directories), not_images, "", directories)
    file_size = path.stat().st_size
    entries, damage = [], ""
    with open(path, "rb") as raw:
        try:
            found = _tar_files(_open_tar(raw, path), path, not_images, directories=directories)
            for name, offset, size in found:
                name = _tree_name(name)
                if any(part.startswith(".") for part in name.split("/")):
                    not_images.append({"member": name, "reason": _HIDDEN})
                    continue
                _check_inside(path, file_size, name, offset + size)
                entries.append(("", name, offset, size, ""))
        except DamagedArchive as error:
            if not allow_incomplete:
                raise
            damage = str(error)
    directories = [d for d in map(_tree_name, directories)
                   if d and not any(part.startswith(".") for part in d.split("/"))]
    return Index(entries, not_images, damage, directories)


def _walk(root: Path, under: str, not_images: list[dict], directories: list[str]) -> list:
    entries = []
    with os.scandir(root / under) as scan:
        found = sorted(scan, key=lambda entry: entry.name)
    for entry in found:
        name = f"{under}/{entry.name}" if under else entry.name
        if entry.name.startswith("."):
            not_images.append({"member": name, "reason": _HIDDEN})
        elif entry.is_symlink():
            not_images.append({"member": name, "reason": "a symbolic link, not an image"})
        elif entry.is_dir():
            directories.append(name)
            entries += _walk(root, name, not_images, directories)
        elif entry.is_file():
            entries.append(("", name, 0, entry.stat().st_size, name))
        else:
            not_images.append({"member": name, "reason": "a special file, not an image"})
    return entries
