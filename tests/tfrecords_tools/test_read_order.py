"""The archive is read front to back, as measured from outside: the real command under
strace.  Indexing reads the headers in one forward pass, converting reads the images in
a second; the shard shuffle never becomes the read order."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "convert_at_scale", ROOT / "benchmarks" / "convert_at_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("split", ["train", "validation"])
def test_each_archive_is_read_in_forward_passes_only(sample_archives, tmp_path, split):
    measure = _benchmark()
    archive = sample_archives.train if split == "train" else sample_archives.validation
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "tfrecords_tools", "convert",
               str(sample_archives.directory), str(tmp_path / "out"), "--splits", split,
               f"--{split}-shards", "3", "--size", "48", "--quiet", "-j", "2"]
    first = measure.read_order(measure.traced_reads(command, environment, archive,
                                                    tmp_path / "first.log"))
    # Two passes: the index (headers only), then the images, each front to back.
    assert first["jumps"] == 1, first
    assert first["bytes"] >= archive.stat().st_size * 0.9
    for shard in (tmp_path / "out").glob(f"{split}-*"):
        shard.unlink()
    # A rerun takes the index from the cache: one pass, no jump back at all.
    again = measure.read_order(measure.traced_reads(command, environment, archive,
                                                    tmp_path / "again.log"))
    assert (again["jumps"], again["forward"]) == (0, 1.0), again
