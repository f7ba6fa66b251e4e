"""The distribution as a whole: the Python floor it promises, and packages that leave the
importing program's state alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).parent.parent


def floor(specifier: str) -> tuple[int, ...]:
    """The lowest Python version a `>=X.Y` specifier admits."""
    (lower,) = [s.version for s in SpecifierSet(specifier) if s.operator == ">="]
    return tuple(int(part) for part in lower.split("."))


def test_the_python_floor_is_the_dependencies_floor_everywhere_it_is_written():
    ours = re.search(r'python_requires="([^"]+)"', (ROOT / "setup.py").read_text())[1]
    # Every dependency as installed here must run on our floor: a lower floor than the
    # highest of theirs is a promise pip cannot keep (keras 3.15 needs 3.11).
    theirs = {}
    for line in requires("keras-alexnet"):
        requirement = Requirement(line)
        if requirement.marker is not None:
            continue  # an extra
        needed = distribution(requirement.name).metadata.get("Requires-Python")
        if needed and any(s.operator == ">=" for s in SpecifierSet(needed)):
            theirs[requirement.name] = floor(needed)
    assert floor(ours) == max(theirs.values()), theirs
    major, minor = floor(ours)[:2]
    assert f"Python {major}.{minor}+" in (ROOT / "README.md").read_text()
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["target-version"] == f"py{major}{minor}"
    assert sys.version_info >= (major, minor)


def test_importing_the_packages_changes_no_global_state():
    script = """
import os, cv2
from PIL import ImageFile
# TensorFlow sets variables of its own when imported (TF2_BEHAVIOR, TPU_ML_PLATFORM...):
# imported first, so that only what our packages change is compared (the test passed only
# when an earlier test had imported TensorFlow into the environment it inherits).
import tensorflow, tensorflow.python.keras.saving.save  # noqa: F401
ImageFile.LOAD_TRUNCATED_IMAGES = True
cv2.setNumThreads(3)
environment = dict(os.environ)
import keras_alexnet, keras_alexnet.commands, keras_alexnet.training, keras_alexnet.data
import serving, serving.server, serving.client, serving.__main__
import tfrecords_tools.convert, tfrecords_tools.images, tfrecords_tools.worker
import tfrecords_tools.__main__
assert ImageFile.LOAD_TRUNCATED_IMAGES is True
assert cv2.getNumThreads() == 3, cv2.getNumThreads()
changed = {k for k in set(environment) | set(os.environ)
           if environment.get(k) != os.environ.get(k)}
assert not changed, changed
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("command", [
    ["keras_alexnet", "train", "{missing}", "{tmp}/run", "--reduced"],
    ["keras_alexnet", "evaluate", "{missing}/run", "{tmp}"],
    ["keras_alexnet", "export", "{missing}/run", "--export-base", "{tmp}/export"],
    ["keras_alexnet", "features", "{missing}/run", "{tmp}"],
    ["keras_alexnet", "predict", "{missing}.jpg", "--checkpoint", "{tmp}"],
    ["tfrecords_tools", "convert", "{missing}", "{tmp}/shards"],
    ["tfrecords_tools", "verify", "{missing}"],
    ["tfrecords_tools", "stats", "{missing}"],
])
def test_a_missing_path_fails_before_tensorflow_loads(command, tmp_path):
    # Run with an interpreter that cannot import TensorFlow: the check must come first.
    missing = tmp_path / "missing"
    args = [part.format(missing=missing, tmp=tmp_path) for part in command]
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text("raise ImportError('TensorFlow was imported')\n")
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(blocker)},
                            timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: {missing}"), result.stderr
    assert ": no such " in result.stderr and len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # nothing created
