"""Image folders, the layout of Keras, torchvision and TFDS, in a directory or a tar: which
files make each split, and the classes.

Layouts of `root` (a directory, or a tar whose members may all sit under one top folder,
as `tar -cf photos.tar photos` makes):

- `root/train/<class>/...` with `root/val/<class>/...` (or `validation/`) and
  `root/test/...`: labelled when every test image is in a folder of a training class
  (`root/test/<class>/...`, as CIFAR-10's folders), unlabelled when they sit in
  `test/` itself; files beside the split folders (a README) are listed as skipped, any
  other folder there is an error;
- `root/<class>/...`: the train split.  `validation_fraction` F holds out, in every
  class, round(F x its images) of them (at least one, never all) as the validation
  split: the class's paths sorted, then shuffled with the seed, the first ones held out.

Classes are the class folders' names sorted (code points), label = index, as Keras's
`image_dataset_from_directory` and torchvision's `ImageFolder`; a class file fixes
another order and the display names.  A class's synset (`image/class/synset`, first
column of `labels.txt`) is its folder name, so a folder named like a WNID
(`n01440764`) keeps it; its text (`image/class/text`, second column) is the class file's
name for it, else the folder name.  A class file has a line per class, `folder` or
`folder<TAB>display name`, in label order: a `labels.txt` of an earlier conversion is one.

Images in subfolders of a class folder belong to the class, as both readers walk them.
A member is named by its path under `root` (`train/ants/1.jpg`; base names repeat across
classes): that is its `image/filename` and how the manifest lists it.  Hidden files and
symbolic links are listed as skipped (`archives.index_tree`), and files that do not
decode as images when converted.  Errors, each naming the path or class: one class
folder only (a classifier needs two), a file beside the class folders, a class folder
without files, a validation or test class unknown to train, a class file's class without
a folder or a folder the class file lacks.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

from tfrecords_tools import schema
from tfrecords_tools.archives import Index
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.devkit import ClassIndex
from tfrecords_tools.errors import ArchiveError
from tfrecords_tools.members import Member
from tfrecords_tools.options import ConvertOptions
from tfrecords_tools.plan import (
    HeldOutSource,
    SplitPlan,
    archive_identity,
    cached_index,
    refuse_incomplete,
    shard_plan,
)

#: The split folders and the split each holds.
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation",
                 "test": "test"}


@dataclasses.dataclass(frozen=True)
class FolderSource(HeldOutSource):
    """A folder dataset to convert: where it is, how to hold out a validation split
    (`root/<class>` only), and the class file fixing the classes' order and display
    names (None: the folder names sorted)."""

    classes: Path | None = None


@dataclasses.dataclass(frozen=True)
class FolderSplits:
    """What a folder dataset holds: its classes, each split's members, and what was not
    read (hidden files, links, files beside the split folders) per split."""

    classes: ClassIndex
    members: dict[str, list[Member]]
    not_images: dict[str, list[dict]]
    set_aside: dict[str, int] = dataclasses.field(default_factory=dict)  # class: images

    @property
    def splits(self) -> list[str]:
        return [split for split in schema.SPLITS if split in self.members]


def parse_class_file(text: str, path: Path) -> list[tuple[str, str]]:
    """(folder, display name) per line of a class file, in label order."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        folder, _, name = line.partition("\t")
        if not folder.strip():
            raise ArgumentError(f"{path}:{number}: expected 'folder' or 'folder<TAB>display "
                                f"name', got {line!r}")
        entries.append((folder, name or folder))
    repeated = [f for f, n in collections.Counter(f for f, _ in entries).items() if n > 1]
    if repeated:
        raise ArgumentError(f"{path}: class {repeated[0]!r} is listed more than once")
    return entries


def _strip_wrapper(files: list[str], directories: list[str]) -> str:
    """The one top folder holding everything in a tar ("" if none) to read the layout
    under; a split folder is never one."""
    tops = {p.partition("/")[0] for p in files + directories}
    if len(tops) == 1 and all("/" in p for p in files) and next(iter(tops)) not in SPLIT_FOLDERS:
        return next(iter(tops)) + "/"
    return ""


def _classes_under(where: str, files: list[tuple], directories: list[str], root: str
                   ) -> dict[str, list[tuple]]:
    """{class folder: its files} of the class folders under `where` ("" or "train/")."""
    by_class: dict[str, list[tuple]] = {}
    for directory in directories:
        if directory.startswith(where) and "/" not in directory[len(where):]:
            by_class.setdefault(directory[len(where):], [])
    if files and not by_class and not any("/" in entry[1][len(where):] for entry in files):
        raise ArchiveError(f"{root}{where}: image files and no class folders; a folder "
                           f"dataset has each class's images in a folder of its own, "
                           f"{root}{where}<class>/")
    for entry in files:
        inside = entry[1][len(where):]
        folder, slash, _ = inside.partition("/")
        if not slash:
            raise ArchiveError(f"{root}{entry[1]}: a file beside the class folders; every "
                               f"image belongs in its class's folder ({root}{where}<class>/): "
                               f"move it into one, or out of the dataset")
        by_class.setdefault(folder, []).append(entry)
    for folder, entries in sorted(by_class.items()):
        if not entries:
            raise ArchiveError(f"{root}{where}{folder}: a class folder without files; add its "
                               f"images or remove the folder")
        if "\t" in folder or "\n" in folder:
            raise ArchiveError(f"{root}{where}{folder!r}: a class folder name with a tab or a "
                               f"line break cannot be a line of {schema.LABELS}; rename it")
    return by_class


def _labelled_test(files: list[tuple], directories: list[str], root: str
                   ) -> dict[str, list[tuple]] | None:
    """{class folder: its files} of `root/test/` when every image there is in a class
    folder (CIFAR-10's and Kaggle's layout: a labelled test split); None when any sits in
    `test/` itself (an unlabelled test split)."""
    if not files or any("/" not in entry[1][len("test/"):] for entry in files):
        return None
    return _classes_under("test/", files, directories, root)


def _class_index(folders: list[str], class_file: list[tuple[str, str]] | None,
                 where: str, class_path: Path | None) -> ClassIndex:
    if class_file is None:
        ordered = sorted(folders)  # as Keras and torchvision: code point order
        return ClassIndex(tuple(ordered), tuple(ordered))
    listed = {folder for folder, _ in class_file}
    absent = [folder for folder, _ in class_file if folder not in folders]
    if absent:
        raise ArchiveError(f"{where}{absent[0]}: class {absent[0]!r} of {class_path} has no "
                           f"folder of images ({len(absent)} such classes); add its images or "
                           f"remove it from {class_path}")
    unlisted = sorted(set(folders) - listed)
    if unlisted:
        raise ArchiveError(f"{where}{unlisted[0]}: class folder not listed in {class_path} "
                           f"({len(unlisted)} such folders); add it there or remove it")
    return ClassIndex(*(tuple(column) for column in zip(*class_file, strict=True)))


def split_folders(index: Index, source: FolderSource, seed: int,
                  class_file: list[tuple[str, str]] | None = None) -> FolderSplits:
    """The classes and each split's members of the folder dataset `index` lists."""
    root = f"{source.path}/"
    paths = [entry[1] for entry in index.entries]
    wrapper = "" if source.path.is_dir() else _strip_wrapper(paths, index.directories)
    files = [(entry[0], entry[1][len(wrapper):], *entry[2:]) for entry in index.entries]
    directories = [d[len(wrapper):] for d in index.directories if d.startswith(wrapper)
                   and d != wrapper.rstrip("/")]
    root += wrapper
    tops = {p.partition("/")[0] for p in [f[1] for f in files if "/" in f[1]] + directories}
    not_images: dict[str, list[dict]] = collections.defaultdict(list)
    members: dict[str, list[Member]] = {}
    if "train" in tops:  # root/train/<class>, root/val/<class>, root/test
        strangers = sorted(tops - set(SPLIT_FOLDERS))
        if strangers:
            raise ArchiveError(f"{root}{strangers[0]}: a folder beside train/ that is not a "
                               f"split folder ({', '.join(f'{f}/' for f in SPLIT_FOLDERS)}); "
                               f"move it out of {root}")
        if {"val", "validation"} <= tops:
            raise ArchiveError(f"{root}: has both val/ and validation/; keep one")
        validation_folder = "val" if "val" in tops else "validation"
        if source.hold_out.validation and validation_folder in tops:
            flag = ("--validation-fraction" if source.validation_fraction is not None
                    else "--validation-per-class")
            raise ArgumentError(f"{flag}: {root} has its own validation folder; drop the "
                                f"option or the folder")
        by_split: dict[str, list[tuple]] = collections.defaultdict(list)
        for entry in files:
            top, slash, _ = entry[1].partition("/")
            if slash:
                by_split[SPLIT_FOLDERS[top]].append(entry)
            else:  # a README beside the split folders
                not_images["train"].append({"member": entry[1], "reason": "a file beside "
                                            "the split folders, not in a split"})
        train = _classes_under("train/", by_split["train"], directories, root)
        validation = (_classes_under(f"{validation_folder}/", by_split["validation"],
                                     directories, root) if validation_folder in tops else None)
        test = _labelled_test(by_split["test"], directories, root) if "test" in tops else None
        if "test" in tops and test is None:
            members["test"] = [Member(f[1], f[2], f[3], schema.UNLABELED, f[4])
                               for f in by_split["test"]]
        where = {"train": "train/", "validation": f"{validation_folder}/", "test": "test/"}
    else:  # root/<class>
        train, validation, test = _classes_under("", files, directories, root), None, None
        where = {"train": "", "validation": ""}
    aside = source.hold_out.set_aside(train, f"{root}{where['train']}")
    for held in (validation, test):
        for folder in set(aside) & set(held or ()):
            del held[folder]
    if len(train) == 1:
        raise ArchiveError(f"{root}{where['train']}: one class folder ({next(iter(train))}/); "
                           f"a classifier needs at least two: put each class's images in a "
                           f"folder of its own under {root}{where['train']}")
    if class_file is not None:
        class_file = [(folder, name) for folder, name in class_file if folder not in aside]
    classes = _class_index(list(train), class_file, f"{root}{where['train']}", source.classes)
    label_of = classes.label_of

    def labelled(by_class: dict[str, list[tuple]]) -> dict[str, list[Member]]:
        return {folder: [Member(f[1], f[2], f[3], label_of[folder], f[4]) for f in entries]
                for folder, entries in by_class.items()}

    def of_known_classes(by_class: dict[str, list[tuple]], folder: str) -> list[Member]:
        """A held-out split's members; a class train lacks is an error naming it."""
        unknown = sorted(set(by_class) - set(label_of))
        if unknown:
            raise ArchiveError(f"{root}{folder}{unknown[0]}: class {unknown[0]!r} is not a "
                               f"class of {root}train/ ({len(unknown)} such classes); add "
                               f"its training images or remove it")
        return [m for ms in labelled(by_class).values() for m in ms]

    if test is not None:
        members["test"] = of_known_classes(test, "test/")
    if validation is not None:
        members["validation"] = of_known_classes(validation, where["validation"])
        members["train"] = [m for ms in labelled(train).values() for m in ms]
    elif source.hold_out.validation:
        members["train"], members["validation"] = source.hold_out.split(
            labelled(train), seed, f"{root}{where['train']}")
    else:
        members["train"] = [m for ms in labelled(train).values() for m in ms]
    empty = [split for split in members if not members[split]]
    if empty:
        within = f"{root}{where[empty[0]]}"
        nor = "" if where["train"] else " and none of the ILSVRC-2012 archives"
        raise ArchiveError(f"{within}: holds no images{nor}; an image folder dataset has "
                           f"them in {within}<class>/")
    for entry in index.not_images:
        name = entry["member"].removeprefix(wrapper)  # as a directory of the tar names it
        top = name.partition("/")[0]
        not_images[SPLIT_FOLDERS.get(top, "train") if "train" in tops else "train"].append(
            dict(entry, member=name))
    return FolderSplits(classes, members, dict(not_images), aside)


def plan_folders(source: FolderSource, output: Path, options: ConvertOptions, progress: bool
                 ) -> list[SplitPlan]:
    """The plans of a folder dataset's splits (`options.splits`, default all it has)."""
    index = cached_index(output, "folders", source.path, progress)
    if index.damage and not options.allow_incomplete:
        refuse_incomplete(source.path, "damaged", index.damage)
    class_file = (parse_class_file(source.classes.read_text(encoding="utf-8"), source.classes)
                  if source.classes else None)
    found = split_folders(index, source, options.seed, class_file)
    absent = [split for split in options.splits or () if split not in found.members]
    if absent:
        raise ArgumentError(f"--splits {absent[0]}: {source.path} has no {absent[0]} split "
                            f"(it has {', '.join(found.splits)})")
    record = source.hold_out.record()
    plans = []
    for split in options.splits or found.splits:
        findings = {"incomplete": {"damage": index.damage}} if index.damage else {}
        if found.not_images.get(split):
            findings["not_images"] = found.not_images[split]
        if found.set_aside:
            findings["set_aside"] = found.set_aside
        held_out = {key: value for key, value in record.items()
                    if split != "test" or key == "min_images_per_class"}
        plans.append(shard_plan(
            split, source.path, found.members[split], found.classes,
            {"archive": archive_identity(source.path), "devkit": None, **held_out},
            findings, options))
    return plans
