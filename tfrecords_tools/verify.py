"""Re-reads every shard and checks it against `manifest.json` and `labels.txt`.

Each problem names its shard (and record, counted from 0): a missing or extra shard, a
size or sha256 that differs from the manifest, a record that fails its CRC or does not
parse, an image that does not decode to the stated RGB geometry, a label out of range
or inconsistent with its synset, and per-class counts that differ from the manifest.
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

from tfrecords_tools import schema
from tfrecords_tools.convert import LABELS, MANIFEST, file_sha256


def _check_record(serialized: bytes, split: str, wnids: list[str]) -> tuple[int | None, str]:
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
    if split == "test":
        if label != schema.UNLABELED:
            return None, f"label {label} in the unlabeled test split"
    elif not 0 <= label < len(wnids):
        return None, f"label {label} outside [0, {len(wnids)})"
    elif synset != wnids[label]:
        return None, f"label {label} is {wnids[label]} in {LABELS} but the synset is {synset}"
    try:
        image = Image.open(io.BytesIO(encoded))
        image.load()
    # Whatever the decoder raises, the record is reported, not the run aborted.
    except Exception as error:
        return None, f"image does not decode ({type(error).__name__}: {error})"
    if (image.format, image.mode, image.size) != ("JPEG", "RGB", (width, height)):
        return None, (f"image is {image.format} {image.mode} {image.size[0]}x{image.size[1]}, "
                      f"the record says JPEG RGB {width}x{height}")
    return (label if split != "test" else None), ""


def _verify_shard(path: Path, entry: dict, split: str,
                  wnids: list[str]) -> tuple[list[str], collections.Counter, int]:
    name = path.name
    problems = []
    if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
        problems.append(f"{name}: sha256 differs from {MANIFEST} (the file was changed)")
    counts = collections.Counter()
    records = 0
    try:
        for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            label, problem = _check_record(serialized, split, wnids)
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


def verify(output: str | Path, splits: list[str] | None = None, processes: int | None = None,
           progress: bool = True) -> list[str]:
    """Every problem found in the shards of `splits` (default: all in the manifest)."""
    from tqdm import tqdm

    output = Path(output)
    try:
        manifest = json.loads((output / MANIFEST).read_text())
        wnids = [w for w, _ in schema.read_labels(output / LABELS)]
    except (OSError, ValueError) as error:
        return [f"{output}: cannot read {MANIFEST} and {LABELS} ({error})"]
    splits = splits or list(manifest["splits"])
    problems = [f"{output}: {MANIFEST} has no {s} split" for s in splits
                if s not in manifest["splits"]]
    jobs = []
    for split in (s for s in splits if s in manifest["splits"]):
        entries = manifest["splits"][split]["shards"]
        listed = {e["name"] for e in entries}
        problems += [f"{p.name}: not in {MANIFEST}"
                     for p in sorted(output.glob(schema.shard_pattern(split)))
                     if p.name not in listed]
        for entry in entries:
            path = output / entry["name"]
            if path.is_file():
                jobs.append((split, path, entry))
            else:
                problems.append(f"{entry['name']}: missing")
    class_counts = {s: collections.Counter() for s in splits}
    # Threads suffice: sha256, TFRecord reading and JPEG decoding all release the GIL.
    with concurrent.futures.ThreadPoolExecutor(processes or os.cpu_count()) as pool, \
            tqdm(total=sum(e["records"] for _, _, e in jobs), unit="img", desc="verifying",
                 disable=not progress) as bar:
        futures = [(split, pool.submit(_verify_shard, path, entry, split, wnids))
                   for split, path, entry in jobs]
        for split, future in futures:
            shard_problems, counts, records = future.result()
            problems += shard_problems
            class_counts[split] += counts
            bar.update(records)
    for split in (s for s in splits if s in manifest["splits"] and s != "test"):
        expected = manifest["splits"][split]["class_counts"]
        for label, wnid in enumerate(wnids):
            if class_counts[split][label] != expected.get(wnid, 0):
                problems.append(f"{split}: class {label} ({wnid}) has "
                                f"{class_counts[split][label]} records, the manifest says "
                                f"{expected.get(wnid, 0)}")
    return problems
