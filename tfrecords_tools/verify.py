"""Re-reads every shard and checks it against `manifest.json`, `labels.txt` and the devkit.

Each problem names its shard (and record, counted from 0): a missing or extra shard, a
size or sha256 that differs from the manifest, a record that fails its CRC or does not
parse, an image that does not decode to the stated RGB geometry, a label out of range
or inconsistent with its synset, and per-class counts that differ from the manifest.
Then completeness: the records plus the skipped members of every class must make the
devkit's `num_train_images` (and the val split one image per ground-truth line), as
recorded in the manifest at conversion or read from `devkit` when it is given; a
shortfall accepted with `--allow-incomplete` is reported too.  And the TFDS metadata
(`tfds.check_metadata`): TensorFlow Datasets must read the splits, counts and classes
that the manifest and `labels.txt` give.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import os
import re
from pathlib import Path

import tensorflow as tf
from PIL import Image

from tfrecords_tools import schema, tfds
from tfrecords_tools.base import storage
from tfrecords_tools.devkit import read_devkit
from tfrecords_tools.manifest import file_sha256


def _check_record(serialized: bytes, labelled: bool, wnids: list[str],
                  offset: int) -> tuple[int | None, str]:
    """(label, problem) of one record; problem is "" when the record is sound."""
    try:
        feature = tf.train.Example.FromString(serialized).features.feature
        encoded = feature["image/encoded"].bytes_list.value[0]
        height = feature["image/height"].int64_list.value[0]
        width = feature["image/width"].int64_list.value[0]
        label = feature["image/class/label"].int64_list.value[0]
        synset = feature["image/class/synset"].bytes_list.value[0].decode()
    except (IndexError, UnicodeDecodeError, ValueError) as error:
        return None, f"unparsable example ({type(error).__name__}: {error})"
    if not labelled:
        if label != schema.UNLABELED:
            return None, f"label {label} in the unlabeled test split"
    elif not offset <= label < len(wnids) + offset:
        return None, (f"label {label} outside [{offset}, {len(wnids) + offset}) "
                      f"(label offset {offset})")
    elif synset != wnids[label - offset]:
        return None, (f"label {label} is {wnids[label - offset]} in {schema.LABELS} but the synset "
                      f"is {synset}")
    else:
        label -= offset
    try:
        image = Image.open(io.BytesIO(encoded))
        image.load()
    # Whatever the decoder raises, the record is reported, not the run aborted.
    except Exception as error:
        return None, f"image does not decode ({type(error).__name__}: {error})"
    if (image.format, image.mode, image.size) != ("JPEG", "RGB", (width, height)):
        return None, (f"image is {image.format} {image.mode} {image.size[0]}x{image.size[1]}, "
                      f"the record says JPEG RGB {width}x{height}")
    return (label if labelled else None), ""


def _verify_shard(path: storage.PathOrUrl, entry: dict, labelled: bool, wnids: list[str],
                  offset: int) -> tuple[list[str], collections.Counter, int]:
    name = path.name
    problems = []
    if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
        problems.append(f"{name}: sha256 differs from {schema.MANIFEST} (the file was changed)")
    counts = collections.Counter()
    records = 0
    try:
        for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            label, problem = _check_record(serialized, labelled, wnids, offset)
            if problem:
                problems.append(f"{name}: record {records}: {problem}")
            elif label is not None:
                counts[label] += 1
            records += 1
    except tf.errors.OpError as error:
        # TensorFlow wraps "corrupted record at <offset>" in its function's name.
        reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", error.message)
        problems.append(f"{name}: record {records}: unreadable ({reason})")
    if records != entry["records"]:
        problems.append(f"{name}: {records} records, the manifest says {entry['records']}")
    return problems, counts, records


def _completeness(split: str, entry: dict, wnids: list[str], devkit) -> list[str]:
    """The split's records + skips against what the devkit lists."""
    expected = entry.get("expected", {})
    if devkit is not None:
        expected = ({"class_counts": devkit.train_counts} if split == "train"
                    else {"images": len(devkit.ground_truth)} if split == "validation" else {})
    problems = []
    incomplete = entry.get("incomplete")
    if incomplete:
        problems.append(f"{split}: converted with --allow-incomplete: "
                        f"{json.dumps(incomplete, sort_keys=True)}")
    skips = collections.Counter(s.get("synset") for s in entry["skipped"] if s.get("shard"))
    if "images" in expected:
        have = entry["records"] + sum(skips.values())
        if have != expected["images"]:
            problems.append(f"{split}: {have} images (records and skipped members), the "
                            f"devkit lists {expected['images']}")
    short = (incomplete or {}).get("classes", {})
    for wnid, count in expected.get("class_counts", {}).items():
        have = entry["class_counts"].get(wnid, 0) + skips[wnid]
        if have != count and not (wnid in short and short[wnid][0] == have):
            problems.append(f"{split}: class {wnid} has {have} images (records and skipped "
                            f"members), the devkit's num_train_images is {count}")
    unknown = set(expected.get("class_counts", {})) - set(wnids)
    if unknown:
        problems.append(f"{split}: the devkit lists {len(unknown)} classes not in {schema.LABELS} "
                        f"(e.g. {sorted(unknown)[0]})")
    return problems


def verify(output: str | storage.PathOrUrl, splits: list[str] | None = None,
           processes: int | None = None, progress: bool = True,
           devkit: str | Path | None = None) -> list[str]:
    """Every problem found in the shards of `splits` (default: all in the manifest);
    `devkit` checks the counts against that devkit instead of the manifest's record."""
    from tfrecords_tools.base.progress import tqdm

    output = storage.path(output)
    try:
        manifest = json.loads((output / schema.MANIFEST).read_text())
        classes = schema.read_labels(output / schema.LABELS)
    except (OSError, ValueError) as error:
        return [f"{output}: cannot read {schema.MANIFEST} and {schema.LABELS} ({error})"]
    wnids = [wnid for wnid, _ in classes]
    offset = manifest.get("label_offset", 0)
    devkit = read_devkit(devkit) if devkit else None
    splits = splits or list(manifest["splits"])
    problems = [f"{output}: {schema.MANIFEST} has no {s} split" for s in splits
                if s not in manifest["splits"]]
    problems += tfds.check_metadata(output, manifest, classes)
    jobs = []
    for split in (s for s in splits if s in manifest["splits"]):
        entries = manifest["splits"][split]["shards"]
        listed = {e["name"] for e in entries}
        problems += [f"{p.name}: not in {schema.MANIFEST}"
                     for p in sorted(output.glob(schema.shard_pattern(split)))
                     if p.name not in listed]
        for entry in entries:
            path = output / entry["name"]
            if path.is_file():
                jobs.append((split, path, entry))
            else:
                problems.append(f"{entry['name']}: missing")
    class_counts = {s: collections.Counter() for s in splits}
    # The test split is unlabelled, except where its labels were released (ILSVRC-2010):
    # the manifest then counts its classes.
    labelled = {s: s != "test" or bool(manifest["splits"][s]["class_counts"])
                for s in splits if s in manifest["splits"]}
    # Threads suffice: sha256, TFRecord reading and JPEG decoding all release the GIL.
    with concurrent.futures.ThreadPoolExecutor(processes or os.cpu_count()) as pool, \
            tqdm(total=sum(e["records"] for _, _, e in jobs), unit="img", desc="verifying",
                 disable=not progress) as bar:
        futures = [(split, pool.submit(_verify_shard, path, entry, labelled[split], wnids,
                                       offset))
                   for split, path, entry in jobs]
        for split, future in futures:
            shard_problems, counts, records = future.result()
            problems += shard_problems
            class_counts[split] += counts
            bar.update(records)
    for split in (s for s in splits if labelled.get(s)):
        expected = manifest["splits"][split]["class_counts"]
        for label, wnid in enumerate(wnids):
            if class_counts[split][label] != expected.get(wnid, 0):
                problems.append(f"{split}: class {label} ({wnid}) has "
                                f"{class_counts[split][label]} records, the manifest says "
                                f"{expected.get(wnid, 0)}")
        problems += _completeness(split, manifest["splits"][split], wnids, devkit)
    return problems
