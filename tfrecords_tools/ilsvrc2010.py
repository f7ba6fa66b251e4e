"""ILSVRC-2010's own files: the archive names, the released test ground truth and
`patch_images.tar`.

The 2010 archives have the 2012 shapes (a train tar of per-class `n########.tar`, flat
val and test tars, a devkit whose `meta.mat` `archives.read_devkit` reads by its
`ILSVRC2010_ID` field), with two more files.  `ILSVRC2010_test_ground_truth.txt` labels
the test images, one ILSVRC2010_ID a line for `ILSVRC2010_test_%08d.JPEG` 1, 2, ...:
2010 is the one year whose test set can be scored locally (the paper's Table 1
[paper §6]).  `patch_images.tar` holds replacements for some train, val and test
images, as members `.../<split>/<base name>` (split `train`, `val` or `test`), each
replacing the member of that base name in the split's archive (the Fuel converter's
rule).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfrecords_tools.archives import Archives, index_tree
from tfrecords_tools.devkit import Devkit, check_ids, parse_ids
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import Member, MemberReader
from tfrecords_tools.schema import UNLABELED

TRAIN_TAR = "ILSVRC2010_images_train.tar"
VAL_TAR = "ILSVRC2010_images_val.tar"
TEST_TAR = "ILSVRC2010_images_test.tar"
DEVKIT = "ILSVRC2010_devkit-1.0.tar.gz"
TEST_TRUTH = "ILSVRC2010_test_ground_truth.txt"
PATCHES = "patch_images.tar"
#: patch_images.tar's folder of each split
PATCH_FOLDERS = {"train": "train", "val": "validation", "test": "test"}


def find(directory: str | Path) -> Archives:
    """The ILSVRC-2010 files under their own names in `directory` (None where absent)."""
    directory = Path(directory)

    def existing(name: str) -> Path | None:
        return directory / name if (directory / name).is_file() else None

    return Archives(train=existing(TRAIN_TAR), validation=existing(VAL_TAR),
                    test=existing(TEST_TAR), devkit=existing(DEVKIT),
                    test_truth=existing(TEST_TRUTH), patches=existing(PATCHES))


def read_test_truth(path: str | Path, devkit: Devkit) -> Devkit:
    """`devkit` with the test ground truth of `path` (ILSVRC2010_test_ground_truth.txt)."""
    path = Path(path)
    try:
        ids = parse_ids(path.read_bytes(), path)
    except FileNotFoundError as error:
        raise ArchiveError(f"{path}: the test ground truth does not exist") from error
    check_ids(ids, devkit, f"{path}: the test ground truth")
    return dataclasses.replace(devkit, test_ground_truth=ids)


@dataclasses.dataclass(frozen=True)
class Patch:
    """A replacement image: its member in patch_images.tar, and its bytes."""

    member: str
    data: bytes


def read_patches(path: str | Path) -> dict[str, dict[str, Patch]]:
    """patch_images.tar's images: split -> base name -> `Patch`, read in one pass (the
    tar is small).  A damaged tar, a member outside the split folders or a base name
    twice in one split is an error naming the member."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: the patch images tar does not exist")
    index = index_tree(path)  # raises naming where a damaged tar stops
    patches: dict[str, dict[str, Patch]] = {split: {} for split in PATCH_FOLDERS.values()}
    with MemberReader(path) as reader:
        for _, member, offset, size, _ in index.entries:
            folder, _, name = member.rpartition("/")
            split = PATCH_FOLDERS.get(folder.rpartition("/")[2])
            if split is None:
                raise ArchiveError(f"{path}: member {member} is not in a folder named "
                                   f"{', '.join(PATCH_FOLDERS)}; is this ILSVRC-2010's "
                                   f"{PATCHES}?")
            if name in patches[split]:
                raise ArchiveError(f"{path}: member {member} replaces "
                                   f"{patches[split][name].member}'s image again")
            patches[split][name] = Patch(member, reader.read(Member(name, offset, size,
                                                                    UNLABELED)))
    return patches
