"""The archive is read once, front to back, as measured from outside: the real command
under strace.  With a devkit, the train and val tars are read in one pass with no index
first (headers and images from the same reads); the shard shuffle never becomes the read
order."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.tfrecords_tools.conftest import make_ilsvrc2010
from tfrecords_tools import ilsvrc2010, passes

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "convert_at_scale", ROOT / "benchmarks" / "convert_at_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_each_archive_is_read_in_one_forward_pass(sample_archives, tmp_path, split, jobs):
    measure = _benchmark()
    archive = sample_archives.train if split == "train" else sample_archives.validation
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "tfrecords_tools", "convert",
               str(sample_archives.directory), str(tmp_path / "out"), "--splits", split,
               f"--{split}-shards", "3", "--size", "48", "--quiet", "-j", str(jobs)]
    order = measure.read_order(measure.traced_reads(command, environment, archive,
                                                    tmp_path / "trace.log"))
    assert order["beyond"] >= 0.99, order
    assert order["bytes"] <= archive.stat().st_size * 1.01, order
    # No index is built or cached: the pass itself reads the headers.
    assert not list((tmp_path / "out" / ".convert").glob("*.index.json"))


@pytest.fixture(scope="module")
def large_2010(tmp_path_factory):
    """ILSVRC-2010-shaped train and test tars of about 10 MB: several reads each."""
    return make_ilsvrc2010(tmp_path_factory.mktemp("large2010"), train_per_class=10,
                           test_images=60, image_size=(400, 480))


@pytest.mark.parametrize("split", ["train", "test"])
def test_ilsvrc2010_archives_are_read_in_one_forward_pass(large_2010, tmp_path, split):
    """The labelled test tar as the val tar, the train tar with patch_images.tar's images."""
    measure = _benchmark()
    archive = large_2010.path(ilsvrc2010.TRAIN_TAR if split == "train" else ilsvrc2010.TEST_TAR)
    assert archive.stat().st_size > 2 * passes.SLOT_BYTES
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "tfrecords_tools", "convert",
               str(large_2010.directory), str(tmp_path / "out"), "--splits", split,
               f"--{split}-shards", "3", "--size", "32", "--quiet", "-j", "2"]
    order = measure.read_order(measure.traced_reads(command, environment, archive,
                                                    tmp_path / "trace.log"))
    assert order["beyond"] >= 0.99, order
    assert order["bytes"] <= archive.stat().st_size * 1.01, order
    assert not list((tmp_path / "out" / ".convert").glob("*.index.json"))
