"""The demo's quick mode: every stage runs for real and leaves what it says it left.

The full demo (which must also learn) runs in `.ci/run`.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_alexnet import demo
from keras_alexnet.commands import build_parser, main
from keras_alexnet.figures import curves, kernels, neighbours, predictions
from keras_alexnet.saved_model import classify_files
from tfrecords_tools.archives import VAL_TAR, flat_members, index_flat, member_reader
from tfrecords_tools.base.cli import TF_LOG_LINE
from tfrecords_tools.schema import read_labels


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`python -m keras_alexnet demo --quick` run once for the module, as a user runs it:
    from a fresh directory, into its default ./demo-output, TensorFlow's logging left
    at its defaults.  Returns the result it wrote, its stdout lines and its stderr."""
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "keras_alexnet", "demo", "--quick"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return demo.DemoResult.read(cwd / "demo-output"), done.stdout.splitlines(), done.stderr


@pytest.mark.slow  # the demo's child process (quick_run)
def test_every_stage_reports_and_leaves_its_outputs(quick_run):
    result, lines, _ = quick_run
    headers = [line for line in lines if re.match(r"\[\d/7\] ", line)]
    assert len(headers) == 7
    assert list(result.seconds) == ["sample", "convert", "train", "evaluate", "export", "serve",
                                    "pictures"]
    data = result.paths["data"]
    settings = demo.QUICK
    labels = read_labels(data / "labels.txt")
    assert len(labels) == settings.num_classes
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["splits"]["validation"]["records"] == (settings.num_classes
                                                           * settings.val_per_class)
    assert (data / "stats.json").exists()
    assert result.paths["checkpoint"].name == f"epoch-{settings.max_epochs:04d}.keras"
    assert len(result.history["epoch"]) == settings.max_epochs
    assert (result.paths["saved_model"] / "saved_model.pb").exists()
    assert result.paths["saved_model"].parent.name == demo.MODEL_NAME

    evaluation = json.loads(result.paths["evaluation"].read_text())
    assert evaluation["images"] == settings.num_classes * settings.val_per_class
    for crops in ("center", "ten_crop"):
        assert 0 <= evaluation[crops]["top5_error"] <= evaluation[crops]["top1_error"] <= 1

    summary = demo.summary(result)
    for path in result.paths.values():
        assert path.exists() and str(path) in summary


@pytest.mark.slow  # the demo's child process (quick_run)
def test_served_top5_is_the_trained_checkpoint_answer(quick_run, tmp_path):
    result, lines, _ = quick_run
    assert len(result.served) == demo.QUICK.queries
    archive = result.paths["archives"] / VAL_TAR
    members = {m.name: m for m in flat_members(index_flat(archive))}
    files = []
    with member_reader(archive) as read:
        for query in result.served:
            files.append(tmp_path / query["file"])
            files[-1].write_bytes(read(members[query["file"]]))
    local = classify_files(files, checkpoint=result.paths["checkpoint"],
                           data_dir=result.paths["data"])
    names = {name for _, name in read_labels(result.paths["data"] / "labels.txt")}
    for query, expected in zip(result.served, local, strict=True):
        assert query["true"] in names
        assert [name for name, _ in query["top5"]] == [name for name, _ in expected]
        np.testing.assert_allclose([p for _, p in query["top5"]], [p for _, p in expected],
                                   atol=1e-5)
        assert any(query["file"] in line and query["true"] in line for line in lines)


@pytest.mark.slow  # the demo's child process (quick_run)
def test_pictures_have_the_layout_of_their_content(quick_run):
    result, _, _ = quick_run

    def size(name):
        with Image.open(result.paths[f"picture:{name}"]) as image:
            return image.size[::-1]  # (height, width)

    per_tower = 6  # conv1 filters a tower in the reduced model
    assert size("kernels") == kernels.KernelGridLayout(per_tower).shape
    assert size("predictions") == (2 * predictions.CELL_HEIGHT, 4 * predictions.CELL_WIDTH)
    assert size("neighbours") == (4 * neighbours.CELL_HEIGHT, 7 * neighbours.CELL_WIDTH)
    assert size("curves") == (450, 1500)
    index = neighbours.load_index(result.paths["pictures"] / "fc7-index-train")
    assert len(index) == json.loads((result.paths["data"] / "manifest.json").read_text())[
        "splits"]["train"]["records"]
    log = curves.read_training_log(result.paths["model"])
    assert log["epoch"].tolist() == list(range(demo.QUICK.max_epochs))


@pytest.mark.slow  # the demo's child process (quick_run)
def test_a_workdir_of_another_demo_is_refused_before_any_work(quick_run):
    result, _, _ = quick_run
    before = sorted(p.name for p in result.workdir.iterdir())
    with pytest.raises(ValueError, match=r"other settings .*demo\.json"):
        demo.run_demo(result.workdir, quick=False, log=lambda _: None)
    assert sorted(p.name for p in result.workdir.iterdir()) == before


def test_a_non_empty_directory_is_not_taken_as_a_workdir(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty and holds no demo\.json"):
        demo.run_demo(tmp_path, quick=True, log=lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_demo_command_takes_no_required_arguments():
    args = build_parser().parse_args(["demo"])
    assert str(args.workdir) == "demo-output" and not args.quick
    args = build_parser().parse_args(["demo", "--quick", "--workdir", "out"])
    assert args.quick and str(args.workdir) == "out"


@pytest.mark.slow  # the demo's child process (quick_run)
def test_the_command_keeps_its_outputs_and_says_what_to_open_and_run(quick_run):
    result, lines, stderr = quick_run
    out = "\n".join(lines)
    assert not [line for line in stderr.splitlines() if TF_LOG_LINE.match(line)]
    written = re.findall(r"^  \S+ +(/\S+)$", out, re.MULTILINE)
    assert len(written) >= 10 and all(path.startswith(str(result.workdir))
                                      for path in written)
    assert result.workdir.name == "demo-output"
    opened = re.findall(r"^  (/\S+\.png)  ", out.split("\nOpen:\n")[1], re.MULTILINE)
    assert sorted(opened) == sorted(str(result.paths[f"picture:{name}"])
                                    for name in ("kernels", "predictions", "neighbours",
                                                 "curves"))
    assert all(Path(path).is_file() for path in opened)  # kept, not in a removed temp dir
    steps = out.split("\nNext:\n")[1]
    assert f"-m serving serve --model_base_path={result.paths['export'] / demo.MODEL_NAME}" \
        in steps
    assert "-m serving query photo.jpg" in steps


@pytest.mark.slow  # the demo's child process (quick_run)
def test_a_rerun_resumes_and_prints_the_same_accuracies(quick_run, monkeypatch, capsys):
    result, lines, _ = quick_run
    monkeypatch.chdir(result.workdir.parent)
    assert main(["demo", "--quick"]) == 0  # into ./demo-output again
    out = capsys.readouterr().out
    accuracy = [line for line in lines if "validation top-1 accuracy" in line]
    assert accuracy and accuracy[0] in out.splitlines()
    again = demo.DemoResult.read(result.workdir)
    assert again.history == result.history  # resumed: no epoch trained twice
    assert again.paths["saved_model"].name == "2"  # the export added a version


@pytest.mark.slow
def test_two_fresh_runs_with_the_fixed_seed_learn_the_same(quick_run, tmp_path):
    result, _, _ = quick_run
    demo.run_demo(tmp_path / "again", quick=True, log=lambda _: None)
    again = demo.DemoResult.read(tmp_path / "again")
    assert again.history == result.history  # every epoch's loss and accuracies, exactly
    assert again.evaluation == result.evaluation
    assert [q["top5"] for q in again.served] == [q["top5"] for q in result.served]
