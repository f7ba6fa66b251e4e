"""Long runs: kill -9 in the forward pass, a worker killed by the OOM killer, Ctrl-C and
SIGTERM, cheap reruns.  Each run is the real command in its own process group."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tfrecords_tools.conftest import KILLED_AT_A_CHECKPOINT, make_ilsvrc2010
from tests.tfrecords_tools.test_convert import _outputs
from tfrecords_tools.convert import convert

pytestmark = pytest.mark.slow

SHARDS = {"train": 3, "validation": 1, "test": 1}
ARGUMENTS = {**{f"{split}_shards": n for split, n in SHARDS.items()}, "size": 48,
             "progress": False}


@pytest.fixture(scope="module")
def long_archives(tmp_path_factory):
    """1500 train images: a forward pass long enough to interrupt."""
    from tfrecords_tools.sample import make_sample_archives

    return make_sample_archives(tmp_path_factory.mktemp("long"), num_classes=10,
                                train_per_class=150, val_per_class=2, test_images=4, seed=1)


@pytest.fixture(scope="module")
def reference(long_archives, tmp_path_factory):
    output = tmp_path_factory.mktemp("reference")
    convert(output, long_archives.directory, processes=1, **ARGUMENTS)
    return output


def _start(long_archives, output, *extra):
    command = [sys.executable, "-m", "tfrecords_tools", "convert",
               str(long_archives.directory), str(output), "--size", "48", "--quiet",
               "--checkpoint-seconds", "0", *extra] + [
        f"--{split}-shards={count}" for split, count in SHARDS.items()]
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    return subprocess.Popen(command, env=environment, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_checkpoint(process, output, after_images=100):
    """Until the train forward pass has recorded `after_images` images."""
    state = output / ".convert" / "train.pass.0-of-1.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads(state.read_text())["position"] >= after_images:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no checkpoint of {after_images} images; {process.communicate()}")


def _children(pid):
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_kill_9_in_the_forward_pass_resumes_from_the_checkpoint(long_archives, reference,
                                                                tmp_path):
    process = _start(long_archives, tmp_path, "-j", "2")
    _wait_for_checkpoint(process, tmp_path)
    os.killpg(process.pid, signal.SIGKILL)  # the converter and its workers
    process.communicate()
    position = json.loads((tmp_path / ".convert" / "train.pass.0-of-1.json")
                          .read_text())["position"]
    assert 100 <= position < 1500, "killed too late to test resuming"
    summary = convert(tmp_path, long_archives.directory, processes=1, **ARGUMENTS)
    # Only the images after the checkpoint were converted again, and none is lost.
    assert summary.images["train"] <= 1500 - position
    assert _outputs(tmp_path) == _outputs(reference)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.glob(".convert/*.pass.*"))
    assert not list((tmp_path / ".convert" / "buckets").iterdir())


def test_a_worker_killed_mid_run_ends_the_run_naming_its_member(long_archives, reference,
                                                                 tmp_path):
    process = _start(long_archives, tmp_path, "-j", "2")
    _wait_for_checkpoint(process, tmp_path)
    victim = _children(process.pid)[-1]
    os.kill(victim, signal.SIGKILL)  # as the out-of-memory killer does
    killed = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - killed < 10
    assert process.returncode == 1, stderr
    assert f"worker process {victim} was killed by SIGKILL (the out-of-memory killer?) " \
           f"while working on {long_archives.train}: member n" in stderr
    assert "rerun of the same command resumes" in stderr
    assert len(stderr.strip().splitlines()) == 1
    convert(tmp_path, long_archives.directory, processes=2, **ARGUMENTS)
    assert _outputs(tmp_path) == _outputs(reference)


@pytest.mark.parametrize(("how", "code", "line"), [
    (signal.SIGINT, 130, "interrupted; rerun the same command to resume"),
    (signal.SIGTERM, 143, "terminated; rerun the same command to resume")])
def test_ctrl_c_and_sigterm_are_one_line(long_archives, tmp_path, how, code, line):
    process = _start(long_archives, tmp_path, "-j", "2")
    _wait_for_checkpoint(process, tmp_path)
    if how == signal.SIGINT:
        os.killpg(process.pid, how)  # Ctrl-C reaches the whole process group
    else:
        os.kill(process.pid, how)
    _, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr.strip()) == (code, line)
    deadline = time.monotonic() + 10  # the workers are gone too
    while Path(f"/proc/{process.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(tmp_path.glob(".*.tmp"))


def test_rerun_reads_nothing_again_and_trusts_receipts(long_archives, reference, tmp_path,
                                                       monkeypatch):
    convert(tmp_path, long_archives.directory, processes=1, **ARGUMENTS)
    # The train and val tars were read in one pass each, with no index.
    assert sorted(p.name for p in (tmp_path / ".convert").glob("*.index.json")) == [
        "test.index.json"]

    def no_indexing(*args, **kwargs):
        raise AssertionError("the archive was indexed or read again")

    def no_hashing(*args, **kwargs):
        raise AssertionError("a finished shard was hashed again")

    monkeypatch.setattr("tfrecords_tools.plan.index_train", no_indexing)
    monkeypatch.setattr("tfrecords_tools.plan.index_flat", no_indexing)
    monkeypatch.setattr("tfrecords_tools.walk.walk_train", no_indexing)
    monkeypatch.setattr("tfrecords_tools.walk.walk_flat", no_indexing)
    monkeypatch.setattr("tfrecords_tools.manifest.file_sha256", no_hashing)
    summary = convert(tmp_path, long_archives.directory, processes=1, **ARGUMENTS)
    assert sum(summary.shards_kept.values()) == 5 and not summary.images
    # A changed mtime changes nothing the shards depend on: still nothing is read again.
    os.utime(long_archives.train, ns=(time.time_ns(), time.time_ns()))
    summary = convert(tmp_path, long_archives.directory, processes=1, **ARGUMENTS)
    assert sum(summary.shards_kept.values()) == 5 and not summary.images
    assert _outputs(tmp_path) == _outputs(reference)


@pytest.fixture(scope="module")
def long_2010(tmp_path_factory):
    """ILSVRC-2010-shaped archives with 240 train images: a pass long enough to kill."""
    return make_ilsvrc2010(tmp_path_factory.mktemp("long2010"), train_per_class=40)


def test_kill_9_in_an_ilsvrc2010_pass_resumes_byte_identical(long_2010, tmp_path):
    arguments = {**ARGUMENTS, "size": 32, "processes": 1}
    convert(tmp_path / "reference", long_2010.directory, **arguments)
    output = tmp_path / "out"
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), KILL_AFTER="64")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_A_CHECKPOINT, "convert", str(long_2010.directory),
         str(output), "--size", "32", "--quiet", "--checkpoint-seconds", "0", "-j", "2"]
        + [f"--{split}-shards={count}" for split, count in SHARDS.items()],
        env=environment, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    position = json.loads((output / ".convert" / "train.pass.0-of-1.json")
                          .read_text())["position"]
    assert 64 <= position < 240, "killed too late to test resuming"
    summary = convert(output, long_2010.directory, **arguments)
    assert summary.images["train"] <= 240 - position
    assert _outputs(output) == _outputs(tmp_path / "reference")
    # The replaced image and the gzip-compressed one came through, the test split whole.
    manifest = json.loads((output / "manifest.json").read_text())["splits"]
    assert {r["member"] for r in manifest["train"]["repaired"]} == {
        long_2010.replaced["train"], *(n for n in long_2010.gzipped if n.startswith("n"))}
    assert manifest["test"]["records"] == manifest["test"]["expected"]["images"] == 12
