"""The converter's records of what it wrote: shard receipts, job records, `manifest.json`.

A receipt (`.convert/<shard>.json`) is written when a shard is complete: its record
count, bytes, mtime, sha256, class counts, and the members skipped or repaired.  A job
record (`.convert/<split>.job.json`) says what a split's bytes depend on (archives,
arguments, codecs) and what indexing found (members that are not images, classes short
of the devkit's counts).  `merge` turns a complete set of receipts into `manifest.json`,
and describes the shards to TensorFlow Datasets (`tfds.write_metadata`).
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from tfrecords_tools import __version__, schema, tfds
from tfrecords_tools.base import storage
from tfrecords_tools.base.files import write_atomically
from tfrecords_tools.errors import OutputError

#: Job-record keys that describe the archive's contents rather than the arguments.
FINDINGS = ("not_images", "incomplete", "expected", "set_aside")


def file_sha256(path: storage.PathOrUrl) -> str:
    digest = hashlib.sha256()
    if isinstance(path, storage.Url):
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()
    # Into one buffer, unbuffered: a new 1 MiB bytes object per block costs as much again
    # as the hashing.
    block = bytearray(1 << 20)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(block):
            digest.update(view[:size])
    return digest.hexdigest()


def job_id(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


def state_dir(output: Path) -> Path:
    return output / schema.STATE_DIR


def job_path(output: Path, split: str) -> Path:
    return state_dir(output) / f"{split}.job.json"


def receipt_path(output: Path, shard: str) -> Path:
    return state_dir(output) / f"{shard}.json"


def read_receipt(output: Path, shard: str, job: str) -> dict | None:
    """The shard's receipt if it belongs to `job` and the file on disk is still the one
    it describes (same size and mtime: a rerun does not re-hash every shard; `verify`
    does)."""
    try:
        receipt = json.loads(receipt_path(output, shard).read_text())
        stat = (output / shard).stat()
    except (OSError, ValueError):
        return None
    if (receipt.get("job") != job or stat.st_size != receipt.get("bytes")
            or stat.st_mtime_ns != receipt.get("mtime_ns")):
        return None
    return receipt


def write_receipt(output: Path, receipt: dict) -> None:
    write_atomically(receipt_path(output, receipt["shard"]), json.dumps(receipt, indent=1))


def merge(output: str | Path, splits: Sequence[str] | None = None) -> list[str]:
    """Writes `manifest.json` for every split whose shards all have receipts.

    Returns the splits merged.  `splits` (default: all the directory has job records for)
    must be complete, or the error names the missing shards.
    """
    output = Path(output)
    available = [s for s in schema.SPLITS if job_path(output, s).exists()]
    if splits is None:
        if not available:
            raise OutputError(f"{output}: no conversion was started here (no "
                              f"{schema.STATE_DIR}/*.job.json); run `convert` first")
        wanted, strict = available, False
    else:
        wanted, strict = list(splits), True
        absent = [s for s in wanted if s not in available]
        if absent:
            raise OutputError(f"{output}: no conversion of {', '.join(absent)} was started here")
    manifest_path = output / schema.MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
        "tool": "tfrecords_tools", "version": __version__, "splits": {}}
    classes = (schema.read_labels(output / schema.LABELS)
               if (output / schema.LABELS).exists() else [])
    merged = []
    for split in wanted:
        job = json.loads(job_path(output, split).read_text())
        this_job = job_id(job)
        receipts, missing = [], []
        for index in range(job["num_shards"]):
            name = schema.shard_name(split, index, job["num_shards"])
            try:
                receipt = json.loads(receipt_path(output, name).read_text())
            except (OSError, ValueError):
                receipt = None
            if receipt is None or receipt["job"] != this_job or not (output / name).is_file():
                missing.append(name)
            else:
                receipts.append(receipt)
        if missing:
            if strict:
                raise OutputError(f"{output}: {len(missing)} {split} shards are not finished "
                                  f"(e.g. {missing[0]}); run the converter for them first")
            continue
        class_counts = collections.Counter()
        for receipt in receipts:
            class_counts.update({int(k): v for k, v in receipt["class_counts"].items()})
        entry = {
            "records": sum(r["records"] for r in receipts),
            "num_shards": job["num_shards"],
            # The test split is unlabelled, except where its labels were released
            # (ILSVRC-2010): then its classes are counted too.
            "class_counts": ({classes[label][0]: class_counts[label]
                              for label in range(len(classes))}
                             if split != "test" or any(class_counts[label] for label in
                                                       range(len(classes))) else {}),
            "shards": [{"name": r["shard"], "records": r["records"], "bytes": r["bytes"],
                        "sha256": r["sha256"]} for r in receipts],
            "skipped": ([dict(s, shard=None) for s in job.get("not_images", [])]
                        + [dict(s, shard=r["shard"]) for r in receipts for s in r["skipped"]]),
            "repaired": [dict(s, shard=r["shard"]) for r in receipts for s in r["repaired"]],
            "arguments": {k: v for k, v in job.items() if k not in FINDINGS},
        }
        if "expected" in job:
            entry["expected"] = job["expected"]
        if "incomplete" in job:
            entry["incomplete"] = job["incomplete"]
        if "set_aside" in job:  # classes too small to convert, and their image counts
            entry["set_aside"] = job["set_aside"]
        manifest["splits"][split] = entry
        manifest["label_offset"] = job["label_offset"]
        merged.append(split)
    if merged:
        manifest["num_classes"] = len(classes)
        write_atomically(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        tfds.write_metadata(output, manifest, classes)
    return merged
