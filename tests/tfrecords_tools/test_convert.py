import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import SAMPLE_IMAGE_SIZE, SAMPLE_NUM_SHARDS, SAMPLE_SHARDS
from tests.tfrecords_tools.conftest import KILLED_AFTER_THE_FIRST_RECEIPT
from tfrecords_tools import schema
from tfrecords_tools.convert import convert
from tfrecords_tools.errors import OutputError
from tfrecords_tools.manifest import merge

ARGUMENTS = {**SAMPLE_SHARDS, "size": SAMPLE_IMAGE_SIZE, "progress": False}


def _records(directory, split):
    files = sorted(str(p) for p in Path(directory).glob(schema.shard_pattern(split)))
    return [{k: v.numpy() for k, v in tf.io.parse_single_example(r, schema.FEATURES).items()}
            | {"shard": Path(f).name}
            for f in files for r in tf.data.TFRecordDataset(f)]


def _outputs(directory):
    """Every file the converter promises to make identical: shards, labels, manifest."""
    directory = Path(directory)
    names = [p.name for p in directory.iterdir()
             if p.name.startswith(schema.SPLITS) or p.name in ("labels.txt", "manifest.json")]
    return {name: (directory / name).read_bytes() for name in sorted(names)}


def test_labels_names_and_geometry(converted_shards, sample_archives):
    assert schema.read_labels(converted_shards / "labels.txt") == list(
        zip(sample_archives.wnids, sample_archives.names, strict=True))
    train = _records(converted_shards, "train")
    assert len(train) == 300 - 3  # the truncated, zero-byte and undecodable members
    for record in train:
        filename = record["image/filename"].decode()
        label = record["image/class/label"]
        assert sample_archives.wnids[label] == filename.split("_")[0]
        assert record["image/class/synset"].decode() == sample_archives.wnids[label]
        assert record["image/class/text"].decode() == sample_archives.names[label]
        image = Image.open(io.BytesIO(record["image/encoded"]))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (73, 73))
        assert record["image/height"] == record["image/width"] == 73
    # Classes are mixed within every shard by the seeded shuffle.
    for shard in {r["shard"] for r in train}:
        assert len({r["image/class/label"] for r in train if r["shard"] == shard}) == 10
    validation = sorted(_records(converted_shards, "validation"),
                        key=lambda r: r["image/filename"])
    assert [r["image/class/label"] for r in validation] == list(sample_archives.validation_labels)
    test = _records(converted_shards, "test")
    assert len(test) == 10 and {r["image/class/label"] for r in test} == {schema.UNLABELED}


def test_manifest_records_every_skip_and_repair(converted_shards, sample_archives):
    manifest = json.loads((converted_shards / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert train["records"] == sum(s["records"] for s in train["shards"]) == 297
    assert [s["name"] for s in train["shards"]] == [f"train-0000{i}-of-00004" for i in range(4)]
    for shard in train["shards"]:
        assert shard["sha256"] == _sha(converted_shards / shard["name"])
    kinds = sample_archives.quirks
    assert {s["member"]: s["reason"].split(":")[0] for s in train["skipped"]} == {
        m: {"empty": "zero-byte member"}.get(k, "undecodable")
        for m, k in kinds.items() if k in ("empty", "truncated", "undecodable")}
    repaired = train["repaired"] + manifest["splits"]["validation"]["repaired"]
    assert {r["member"] for r in repaired} == {
        m for m, k in kinds.items() if k in ("png", "cmyk", "grayscale")}
    counts = train["class_counts"]
    assert list(counts) == list(sample_archives.wnids) and sum(counts.values()) == 297
    assert manifest["splits"]["validation"]["records"] == 50


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identical_whatever_the_number_of_processes(converted_shards, sample_archives,
                                                    tmp_path):
    convert(tmp_path, sample_archives.directory, processes=2, **ARGUMENTS)
    assert _outputs(tmp_path) == _outputs(converted_shards)


def test_scale_out_over_machines_then_merge(converted_shards, sample_archives, tmp_path):
    first = convert(tmp_path, sample_archives.directory, processes=1, num_workers=2,
                    worker_index=0, **ARGUMENTS)
    # Worker 0 holds shards 0, 2, 4, 6 of the seven: the whole test split, half of the others.
    assert first.merged == ["test"]
    with pytest.raises(OutputError, match=r"shards are not finished \(e.g. train-00001-of-00004"):
        merge(tmp_path, ["train"])
    second = convert(tmp_path, sample_archives.directory, processes=1, num_workers=2,
                     worker_index=1, **ARGUMENTS)
    assert second.merged == ["train", "validation", "test"]
    assert sum(first.shards_written.values()) + sum(second.shards_written.values()) == 7
    assert _outputs(tmp_path) == _outputs(converted_shards)


def test_rerun_checks_finished_shards_and_redoes_bad_ones(converted_shards, sample_archives,
                                                          tmp_path):
    shutil.copytree(converted_shards, tmp_path, dirs_exist_ok=True)
    damaged = tmp_path / "train-00002-of-00004"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    (tmp_path / "validation-00001-of-00002").unlink()
    summary = convert(tmp_path, sample_archives.directory, processes=1, **ARGUMENTS)
    assert dict(summary.shards_written) == {"train": 1, "validation": 1}
    assert sum(summary.shards_kept.values()) == 5
    assert _outputs(tmp_path) == _outputs(converted_shards)


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(converted_shards, sample_archives, tmp_path):
    arguments = ["convert", str(sample_archives.directory), str(tmp_path), "--size",
                 str(SAMPLE_IMAGE_SIZE), "--quiet"] + [
        f"--{split}-shards={count}" for split, count in SAMPLE_NUM_SHARDS.items()]
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_FIRST_RECEIPT, *arguments,
                             "-j", "2"], env=environment, capture_output=True, timeout=300,
                            start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list((tmp_path / ".convert").glob("*-?????-of-?????.json"))) == 1  # receipts
    assert not (tmp_path / "manifest.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "tfrecords_tools", *arguments, "-j", "1"],
                             env=environment, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "manifest written for: train, validation, test" in resumed.stdout
    assert _outputs(tmp_path) == _outputs(converted_shards)
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".convert/.*.tmp"))


def test_refuses_another_runs_shards_and_keeps_them(converted_shards, sample_archives,
                                                    tmp_path):
    shutil.copytree(converted_shards, tmp_path, dirs_exist_ok=True)
    before = _outputs(tmp_path)
    with pytest.raises(OutputError, match=r"holds train shards of another conversion "
                                          r"\(size: 73 there, 64 here\)"):
        convert(tmp_path, sample_archives.directory, processes=1,
                **(ARGUMENTS | {"size": 64}))
    assert _outputs(tmp_path) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "validation-00000-of-00002").write_bytes(b"someone else's")
    with pytest.raises(OutputError, match="validation shards this converter has no record of"):
        convert(foreign, sample_archives.directory, splits=["validation"], processes=1,
                **ARGUMENTS)
    assert (foreign / "validation-00000-of-00002").read_bytes() == b"someone else's"


def test_full_disk_is_a_clear_error_and_keeps_finished_shards(converted_shards, sample_archives,
                                                              tmp_path):
    # The second shard's temporary file is the kernel's always-full device: ENOSPC.
    (tmp_path / ".validation-00001-of-00002.tmp").symlink_to("/dev/full")
    with pytest.raises(OutputError, match=r"validation-00001-of-00002.*No space left on device"
                                          r".*the 1 validation shards finished are kept"):
        convert(tmp_path, sample_archives.directory, splits=["validation"], processes=1,
                **ARGUMENTS)
    finished = tmp_path / "validation-00000-of-00002"
    assert finished.read_bytes() == (converted_shards / finished.name).read_bytes()
    summary = convert(tmp_path, sample_archives.directory, splits=["validation"], processes=1,
                      **ARGUMENTS)
    assert (summary.shards_kept["validation"], summary.shards_written["validation"]) == (1, 1)
    assert (tmp_path / "validation-00001-of-00002").read_bytes() == (
        converted_shards / "validation-00001-of-00002").read_bytes()


def test_splits_converted_in_separate_runs_share_one_manifest(converted_shards, sample_archives,
                                                              tmp_path):
    convert(tmp_path, sample_archives.directory, splits=["test"], processes=1, **ARGUMENTS)
    summary = convert(tmp_path, sample_archives.directory, splits=["validation"], processes=1,
                      **ARGUMENTS)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    expected = json.loads((converted_shards / "manifest.json").read_text())
    assert summary.merged == ["validation", "test"]
    assert manifest["splits"] == {s: expected["splits"][s] for s in ("validation", "test")}


def _kaggle_layout(sample, root):
    """The sample as Kaggle ships ILSVRC: extracted images, a synset list, a val CSV."""
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    with tarfile.open(sample.train) as outer:
        for info in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(info)) as inner:
                inner.extractall(images / "train" / Path(info.name).stem, filter="data")
    for split, archive in (("val", sample.validation), ("test", sample.test)):
        with tarfile.open(archive) as flat:
            flat.extractall(images / split, filter="data")
    (root / "LOC_synset_mapping.txt").write_text("".join(
        f"{w} {n}\n" for w, n in zip(sample.wnids, sample.names, strict=True)))
    wnids = [sample.wnids[label] for label in sample.validation_labels]
    rows = [f"ILSVRC2012_val_{i:08d},{wnid} 10 20 30 40 {wnid} 1 2 3 4"
            for i, wnid in enumerate(wnids, 1)]
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")


def test_kaggle_layout_gives_the_same_shards(converted_shards, sample_archives, tmp_path):
    _kaggle_layout(sample_archives, tmp_path / "kaggle")
    convert(tmp_path / "out", tmp_path / "kaggle", processes=1, **ARGUMENTS)
    ours = {k: v for k, v in _outputs(tmp_path / "out").items() if k != "manifest.json"}
    assert ours == {k: v for k, v in _outputs(converted_shards).items() if k != "manifest.json"}


def _file_size_limit(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
    return apply


def test_a_bucket_that_cannot_grow_stops_the_run_naming_it(sample_archives, tmp_path):
    """The workers append the records to the buckets; their write failing (a full
    disk, here a file size limit) is the output's problem, not an image's.  (One
    process: with more, the limit would stop the shared buffer's file first.)"""
    command = [sys.executable, "-m", "tfrecords_tools", "convert",
               str(sample_archives.directory), str(tmp_path), "--splits", "train",
               "--train-shards", "1", "--size", str(SAMPLE_IMAGE_SIZE), "-j", "1", "--quiet"]
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    done = subprocess.run(command, env=environment, capture_output=True, text=True,
                          timeout=300, preexec_fn=_file_size_limit(256 << 10))
    assert done.returncode == 1, done.stderr
    # The write stops at the limit part way (a short write) or right at it (EFBIG).
    assert re.fullmatch(rf"error: writing in {re.escape(str(tmp_path))}/\.convert/buckets: "
                        rf"(No space left on device \(wrote \d+ of \d+ bytes\)|File too "
                        rf"large); rerun the same command to resume from the last checkpoint "
                        rf"after fixing this \(a full disk\?\)\n", done.stderr), done.stderr
    resumed = subprocess.run(command, env=environment, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "manifest written for: train" in resumed.stdout
