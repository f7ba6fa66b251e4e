"""An ILSVRC devkit's labels: the classes (leaf synsets of `data/meta.mat`, label i the
i-th WNID sorted, as TFDS), the ground truth of the val images (and of ILSVRC-2010's test
images), and meta.mat's per-class training image counts; or Kaggle's
`LOC_synset_mapping.txt` and `LOC_val_solution.csv` as a devkit."""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import tarfile
from pathlib import Path

import scipy.io

from tfrecords_tools.errors import ArchiveError

KAGGLE_SYNSETS = "LOC_synset_mapping.txt"
KAGGLE_VAL = "LOC_val_solution.csv"
WNID = re.compile(r"n\d{8}")
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)\.\w+")


@dataclasses.dataclass(frozen=True)
class ClassIndex:
    """The 1000 classes: label i is the i-th WNID in sorted order, as in TFDS."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    @functools.cached_property
    def label_of(self) -> dict[str, int]:
        return {wnid: label for label, wnid in enumerate(self.wnids)}

    def labels_txt(self) -> str:
        return "".join(f"{w}\t{n}\n" for w, n in zip(self.wnids, self.names, strict=True))


#: How the val and test images are named: `ILSVRC2012_val_00000001.JPEG`.
_NAME_PART = {"validation": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class Devkit:
    classes: ClassIndex
    wnid_of_id: dict[int, str]  # ILSVRC2012_ID (ILSVRC2010_ID) -> WNID, leaves only
    ground_truth: tuple[int, ...]  # the ID of val image 1, 2, ...
    #: meta.mat's num_train_images per leaf WNID; empty where the devkit does not say
    train_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    prefix: str = "ILSVRC2012"  # of the IDs' field in meta.mat and of the image names
    #: the ID of test image 1, 2, ... where the test labels were released (ILSVRC-2010)
    test_ground_truth: tuple[int, ...] = ()

    def truth(self, split: str) -> tuple[int, ...]:
        """The IDs of the split's images 1, 2, ...; empty for a split without them."""
        return {"validation": self.ground_truth, "test": self.test_ground_truth}.get(split, ())

    def image_name(self, split: str, number: int) -> str:
        return f"{self.prefix}_{_NAME_PART[split]}_{number:08d}.JPEG"

    def number_of(self, split: str, name: str) -> int | None:
        """N of the split's image name `<prefix>_val_N.JPEG`, None for another name."""
        match = _numbered(self.prefix, split).fullmatch(name)
        return int(match[1]) if match else None


@functools.cache
def _numbered(prefix: str, split: str) -> re.Pattern:
    return re.compile(rf"{prefix}_{_NAME_PART[split]}_(\d+)\.\w+")


def _devkit_member(archive: tarfile.TarFile, path: Path, suffix: str) -> bytes:
    for member in archive.getmembers():
        if member.isfile() and member.name.endswith(suffix):
            return archive.extractfile(member).read()
    raise ArchiveError(f"{path}: has no member ending in {suffix!r}; is this an ILSVRC "
                       f"development kit?")


def parse_ids(text: bytes, path: Path | str) -> tuple[int, ...]:
    """A ground-truth file's IDs, one a line."""
    try:
        return tuple(int(line) for line in text.decode().split())
    except (UnicodeDecodeError, ValueError) as error:
        raise ArchiveError(f"{path}: not a ground truth of one ID a line ({error})") from error


def check_ids(ids: tuple[int, ...], devkit: Devkit, what: str) -> None:
    """Every ID of a ground truth is one of the devkit's classes."""
    unknown = sorted(set(ids) - set(devkit.wnid_of_id))
    if unknown:
        raise ArchiveError(f"{what} uses {devkit.prefix}_IDs {unknown[:5]} that are not leaf "
                           f"synsets of data/meta.mat")


def read_devkit(path: str | Path) -> Devkit:
    """The leaf synsets of `data/meta.mat` and the validation ground truth, of the
    ILSVRC-2012 devkit or of ILSVRC-2010's (whose meta.mat numbers the synsets by
    `ILSVRC2010_ID`)."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: the devkit does not exist")
    if path.name == KAGGLE_SYNSETS:
        return _read_kaggle_labels(path)
    try:
        with tarfile.open(path) as archive:
            meta = _devkit_member(archive, path, "data/meta.mat")
            synsets, prefix = _synsets(meta, path)
            truth_name = f"data/{prefix}_validation_ground_truth.txt"
            truth = _devkit_member(archive, path, truth_name)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ArchiveError(f"{path}: unreadable devkit archive ({error})") from error
    try:
        leaves = sorted((str(s["WNID"]), str(s["words"]), int(s[f"{prefix}_ID"]))
                        for s in synsets if int(s["num_children"]) == 0)
        counts = ({str(s["WNID"]): int(s["num_train_images"]) for s in synsets
                   if int(s["num_children"]) == 0}
                  if "num_train_images" in synsets.dtype.names else {})
    except (KeyError, ValueError, TypeError) as error:
        raise ArchiveError(f"{path}: data/meta.mat has no readable 'synsets' "
                           f"({error!r})") from error
    ground_truth = parse_ids(truth, f"{path}: {truth_name}")
    classes = ClassIndex(tuple(w for w, _, _ in leaves), tuple(n for _, n, _ in leaves))
    # A devkit that gives no counts (zeros) leaves completeness to "at least one image".
    devkit = Devkit(classes, {i: w for w, _, i in leaves}, ground_truth,
                    counts if all(counts.values()) else {}, prefix)
    check_ids(ground_truth, devkit, f"{path}: the validation ground truth")
    return devkit


def _synsets(meta: bytes, path: Path):
    """meta.mat's synsets, and the prefix of their ID field (`ILSVRC2012` or `ILSVRC2010`)."""
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        ids = [n for n in synsets.dtype.names if re.fullmatch(r"ILSVRC\d{4}_ID", n)]
    except (KeyError, ValueError, TypeError) as error:
        raise ArchiveError(f"{path}: data/meta.mat has no readable 'synsets' "
                           f"({error!r})") from error
    if len(ids) != 1:
        raise ArchiveError(f"{path}: data/meta.mat's synsets have no ILSVRC####_ID field "
                           f"(fields: {', '.join(synsets.dtype.names)})")
    return synsets, ids[0].removesuffix("_ID")


def _read_kaggle_labels(path: Path) -> Devkit:
    """Kaggle's synset list and val solution as a devkit (IDs made up: label + 1)."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        wnid, _, words = line.partition(" ")
        if not WNID.fullmatch(wnid):
            raise ArchiveError(f"{path}:{number}: expected 'WNID words', got {line!r}")
        entries.append((wnid, words))
    classes = ClassIndex(*(tuple(column) for column in zip(*sorted(entries), strict=True)))
    solution = path.with_name(KAGGLE_VAL)
    truth = {}
    if solution.exists():
        lines = solution.read_text(encoding="utf-8").splitlines()[1:]  # ImageId,PredictionString
        for number, line in enumerate(lines, 2):
            image_id, _, boxes = line.partition(",")
            match = _VAL_NUMBER.fullmatch(image_id + ".JPEG")
            wnid = boxes.split(" ", 1)[0]
            if not match or wnid not in classes.label_of:
                raise ArchiveError(f"{solution}:{number}: expected 'ILSVRC2012_val_%08d,WNID ...'"
                                   f", got {line!r}")
            truth[int(match[1])] = classes.label_of[wnid] + 1
    if sorted(truth) != list(range(1, len(truth) + 1)):
        raise ArchiveError(f"{solution}: the val images are not numbered 1..{len(truth)}")
    return Devkit(classes, {label + 1: wnid for label, wnid in enumerate(classes.wnids)},
                  tuple(truth[number] for number in sorted(truth)))


def unnumbered_reason(devkit: Devkit, split: str) -> str:
    return f"not an {devkit.prefix}_{_NAME_PART[split]}_%08d image name"


def numbered_wnid(devkit: Devkit, split: str, path: Path, name: str, number: int) -> str:
    """The class of the split's image `number` (named `name`) by the ground truth."""
    truth = devkit.truth(split)
    if not 1 <= number <= len(truth):
        raise ArchiveError(f"{path}: member {name} is beyond the {len(truth)} images of "
                           f"{_truth_words(split)}; is this the {devkit.prefix} "
                           f"{_NAME_PART[split]} tar?")
    return devkit.wnid_of_id[truth[number - 1]]


def _truth_words(split: str) -> str:
    return "the devkit's ground truth" if split == "validation" else "the test ground truth"


def refuse_missing(path: Path, devkit: Devkit, split: str, found: int, missing: list[int],
                   damage: str) -> None:
    """The error of a val (test) tar short of the ground truth's images."""
    names = ", ".join(devkit.image_name(split, n) for n in missing[:3])
    raise ArchiveError(f"{path}: has {found} of the {len(devkit.truth(split))} images of "
                       f"{_truth_words(split)}; missing {len(missing)} (e.g. {names})"
                       f"{'; ' + damage if damage else ''}. Download the {_NAME_PART[split]} "
                       f"tar again, or pass --allow-incomplete to convert what is there")
