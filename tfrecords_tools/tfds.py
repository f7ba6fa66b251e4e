"""TensorFlow Datasets metadata: reading a TFDS prepared directory, describing ours to TFDS.

A TFDS prepared dataset (`~/tensorflow_datasets/imagenet2012/5.1.0/`) is TFRecord shards
beside `dataset_info.json` (splits, shard lengths, the shard file names as a
`filepathTemplate` per split, the file format), `features.json` (the feature connectors
that wrote each `tf.train.Example`) and `<feature>.labels.txt` (a `ClassLabel`'s names,
one a line, label = line index, 0-based).  Read here from that JSON alone, so TFDS is
not needed to train on its datasets: `read_prepared` says which Example keys hold the
JPEG, the label and the file name, the classes and each split's shard files.

The other way, `write_metadata` describes the converter's output so that
`tfds.builder_from_directory(output)` loads our shards as they are: the template
`{SPLIT}-{SHARD_X_OF_Y}` is our shard names (no renaming, no copies), and the features
are our keys, each `/` of a key a level of nested `FeaturesDict` (TFDS joins nested
feature names with `/` into Example keys), so a TFDS user reads
`example["image"]["class"]["label"]`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tfrecords_tools import schema
from tfrecords_tools.base import storage
from tfrecords_tools.base.files import write_atomically
from tfrecords_tools.errors import DatasetError

DATASET_INFO = "dataset_info.json"
FEATURES_JSON = "features.json"
#: Our shard names in TFDS's template language (`naming.ShardedFileTemplate`).
SHARD_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}"
#: TFDS's default when a split names no template (datasets prepared before templates).
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
#: TFDS needs a name and a version; our directories have one layout, described by these.
NAME = "tfrecords_tools"
VERSION = "1.0.0"
#: Class 0 of shards written with `--label-offset 1` (the Inception convention).
BACKGROUND = "background"

_PACKAGE = "tensorflow_datasets.core.features."
_CONNECTORS = {"FeaturesDict": "features_dict", "Image": "image_feature",
               "ClassLabel": "class_label_feature", "Text": "text_feature",
               "Scalar": "scalar"}


def is_prepared(path: Path) -> bool:
    """Whether `path` is a TFDS prepared dataset rather than the converter's output (ours
    has a manifest too, and is read by its manifest)."""
    return (path / DATASET_INFO).is_file() and not (path / schema.MANIFEST).exists()


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What training reads of a TFDS prepared dataset."""

    keys: schema.RecordKeys
    classes: tuple[tuple[str, str], ...]  # (name, name) of label i: a WNID for imagenet2012
    labels_path: Path  # the label feature's `<feature>.labels.txt`
    shards: dict[str, tuple[Path, ...]]  # of our splits that the dataset has
    records: dict[str, int]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: no such file; a TFDS prepared dataset has {DATASET_INFO} "
                           f"and {FEATURES_JSON} (prepare it with `tfds build`)") from error
    except ValueError as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); prepare the dataset again "
                           f"with `tfds build`") from error


def _connector(node: dict) -> tuple[str, dict]:
    """(connector class name, its content) of one feature of `features.json`.

    The file comes in three forms, all read: TFDS now writes `pythonClassName` with the
    content under a key of its own (`image`, `classLabel`); `FeatureConnector.to_json`
    wraps that as `type` and `content`; older versions wrote `type` and `content` with
    snake_case content (`encoding_format`), which TFDS still reads.
    """
    if "type" in node:
        return node["type"].rpartition(".")[2], node.get("content") or {}
    content = next((v for k, v in node.items() if k != "pythonClassName"), {})
    return node.get("pythonClassName", "").rpartition(".")[2], content


def _connectors(features: dict) -> dict[str, tuple[str, dict]]:
    """The top-level features as name: (connector class name, its content)."""
    _, content = _connector(features)
    children = content["features"] if set(content) == {"features"} else content
    return {name: _connector(child) for name, child in children.items()}


def _pick(connectors: dict[str, tuple[str, dict]], kind: str, preferred: str | None,
          usual: str, path: Path) -> str:
    """The feature of connector `kind`: the supervised key, else the one named `usual`,
    else the only one."""
    of_kind = [name for name, (cls, _) in connectors.items() if cls == kind]
    for name in (preferred, usual):
        if name in of_kind:
            return name
    if len(of_kind) == 1:
        return of_kind[0]
    what = {"Image": "an Image feature (the JPEG)",
            "ClassLabel": "a ClassLabel feature (the label)"}[kind]
    listing = ", ".join(f"{n} ({c})" for n, (c, _) in connectors.items()) or "none"
    several = (f" (it has several: make one a supervised key or name it {usual!r})"
               if of_kind else "")
    raise DatasetError(f"{path}: training needs {what}{several}; this dataset's features "
                       f"are: {listing}")


def _shard_paths(path: Path, name: str, split: dict, file_format: str) -> tuple[Path, ...]:
    template = split.get("filepathTemplate") or DEFAULT_TEMPLATE
    count = len(split.get("shardLengths") or [])
    paths = []
    for index in range(count):
        relative = (template.replace("{DATASET}", name).replace("{SPLIT}", split["name"])
                    .replace("{FILEFORMAT}", file_format)
                    .replace("{SHARD_X_OF_Y}", f"{index:05d}-of-{count:05d}")
                    .replace("{SHARD_INDEX}", f"{index:05d}")
                    .replace("{NUM_SHARDS}", f"{count:05d}"))
        if "{" in relative:
            raise DatasetError(f"{path / DATASET_INFO}: split {split['name']!r}: shard "
                               f"template {template!r} is not one TFDS writes")
        paths.append(path / relative)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: missing ({len(missing)} of the {count} "
                           f"{split['name']} shards that {DATASET_INFO} lists); prepare the "
                           f"dataset again with `tfds build`")
    return tuple(paths)


def read_prepared(path: str | Path) -> Prepared:
    """The Example keys, classes and shards of a TFDS prepared image-classification
    dataset; a `DatasetError` naming the file or feature when it is not one."""
    path = storage.path(path)
    info = _read_json(path / DATASET_INFO)
    file_format = info.get("fileFormat") or "tfrecord"  # absent before array_record
    if file_format != "tfrecord":
        raise DatasetError(f"{path / DATASET_INFO}: fileFormat is {file_format!r}; training "
                           f"reads TFRecord shards (prepare it with `tfds build "
                           f"--file_format=tfrecord`)")
    connectors = _connectors(_read_json(path / FEATURES_JSON))
    supervised = [item.get("featureKey") for item in
                  ((info.get("supervisedKeys") or {}).get("tuple") or {}).get("items", [])]
    supervised += [None, None]
    features = path / FEATURES_JSON
    image = _pick(connectors, "Image", supervised[0], "image", features)
    label = _pick(connectors, "ClassLabel", supervised[1], "label", features)
    encoding = (connectors[image][1].get("encodingFormat")
                or connectors[image][1].get("encoding_format"))
    if encoding != "jpeg":
        # No encoding_format: TFDS encodes the pixels it is given as PNG.
        raise DatasetError(f"{features}: feature {image!r} holds "
                           f"{(encoding or 'png').upper()} images; "
                           f"training reads JPEG (an Image feature with "
                           f"encoding_format='jpeg', as imagenet2012's)")
    labels_path = path / f"{label}.labels.txt"
    if not labels_path.is_file():
        raise DatasetError(f"{labels_path}: no such file; feature {label!r} has no class "
                           f"names (a ClassLabel made with names= or names_file= has them)")
    names = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines()
             if line.strip()]  # as TFDS reads them
    texts = [name for name, (cls, _) in connectors.items() if cls == "Text"]
    # Without such a feature the key is absent from every Example: file names read "".
    filename = next((n for n in ("file_name", "filename") if n in texts), "file_name")
    shards, records = {}, {}
    for split in info.get("splits") or []:
        if split.get("name") in schema.SPLITS:
            shards[split["name"]] = _shard_paths(path, info.get("name", ""), split,
                                                 file_format)
            records[split["name"]] = sum(int(n) for n in split.get("shardLengths") or [])
    return Prepared(schema.RecordKeys(image=image, label=label, filename=filename),
                    tuple((name, name) for name in names), labels_path, shards, records)


# --- describing our output to TFDS ----------------------------------------------------------

def _describe(kind: str, **content) -> dict:
    key = {"FeaturesDict": "featuresDict", "ClassLabel": "classLabel"}.get(kind, kind.lower())
    return {"pythonClassName": f"{_PACKAGE}{_CONNECTORS[kind]}.{kind}", key: content}


def _scalar() -> dict:
    return {"pythonClassName": f"{_PACKAGE}{_CONNECTORS['Scalar']}.Scalar",
            "tensor": {"shape": {}, "dtype": "int64", "encoding": "none"}}


def _nested(flat: dict[str, dict]) -> dict:
    """`{"image/class/label": f}` as FeaturesDict `{"image": {"class": {"label": f}}}`."""
    tree = {}
    for key, feature in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = feature

    def connector(node: dict) -> dict:
        return _describe("FeaturesDict", features={
            name: connector(child) if "pythonClassName" not in child else child
            for name, child in node.items()})

    return connector(tree)


def _features(num_classes: int) -> dict:
    text = _describe("Text")
    return _nested({
        "image/encoded": _describe("Image", shape={"dimensions": ["-1", "-1", "3"]},
                                    dtype="uint8", encodingFormat="jpeg"),
        "image/format": text, "image/colorspace": text, "image/channels": _scalar(),
        "image/height": _scalar(), "image/width": _scalar(), "image/filename": text,
        "image/class/label": _describe("ClassLabel", numClasses=str(num_classes)),
        "image/class/synset": text, "image/class/text": text})


def metadata(manifest: dict, classes: list[tuple[str, str]]) -> dict[str, str]:
    """The TFDS files (name: text) that describe the converter's shards of the splits of
    `manifest`: `dataset_info.json`, `features.json` and the label's names.

    The ClassLabel's names are the classes' synsets (WNIDs, as imagenet2012's) in label
    order; with label offset 1 name 0 is `BACKGROUND`, so TFDS's label i still means
    name i.
    """
    offset = manifest.get("label_offset", 0)
    names = [BACKGROUND] * offset + [wnid for wnid, _ in classes]
    splits = [{"name": split, "filepathTemplate": SHARD_TEMPLATE,
               "numBytes": str(sum(s["bytes"] for s in entry["shards"])),
               "shardLengths": [str(s["records"]) for s in entry["shards"]]}
              for split, entry in sorted(manifest["splits"].items())]
    info = {"name": NAME, "version": VERSION, "fileFormat": "tfrecord",
            "description": f"Image shards written by tfrecords_tools "
                           f"{manifest.get('version', '')}; labels start at {offset}.",
            "moduleName": __name__, "splits": splits}
    # TFDS names a nested feature's names file by its path with "-"
    # (`convert_feature_name_to_filename`).
    return {FEATURES_JSON: json.dumps(_features(len(names)), indent=1, sort_keys=True) + "\n",
            f"{schema.KEYS.label.replace('/', '-')}.labels.txt":
                "".join(f"{name}\n" for name in names),
            DATASET_INFO: json.dumps(info, indent=1, sort_keys=True) + "\n"}


def write_metadata(output: str | Path, manifest: dict,
                   classes: list[tuple[str, str]]) -> None:
    """Writes `metadata` beside the converter's shards, so that
    `tfds.builder_from_directory(output)` reads them (`dataset_info.json` last: a TFDS
    reader finds all or none)."""
    for name, text in metadata(manifest, classes).items():
        write_atomically(storage.path(output) / name, text)


def check_metadata(output: str | Path, manifest: dict,
                   classes: list[tuple[str, str]]) -> list[str]:
    """The TFDS files of `output` that are missing or describe other shards than
    `manifest` and `classes` do."""
    problems = []
    for name, text in metadata(manifest, classes).items():
        path = storage.path(output) / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: {'missing' if not path.is_file() else 'differs'}; "
                            f"TensorFlow Datasets would not read these shards as "
                            f"{schema.MANIFEST} and {schema.LABELS} describe them; rewrite "
                            f"it with `python -m tfrecords_tools merge {output}`")
    return problems
