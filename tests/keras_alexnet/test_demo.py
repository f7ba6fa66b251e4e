"""The demo's quick mode: every stage runs for real and leaves what it says it left.

The full demo (which must also learn) runs in `.ci/run`.
"""

import json
import os
import re
import tempfile

import numpy as np
import pytest
from PIL import Image

from keras_alexnet import demo
from keras_alexnet.commands import build_parser, main
from keras_alexnet.figures import curves, kernels, neighbours, predictions
from keras_alexnet.saved_model import classify_files
from tfrecords_tools.archives import VAL_TAR, flat_members, index_flat, member_reader
from tfrecords_tools.schema import read_labels


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    lines = []
    result = demo.run_demo(workdir, quick=True, log=lines.append)
    return result, lines


def test_every_stage_reports_and_leaves_its_outputs(quick_run):
    result, lines = quick_run
    headers = [line for line in lines if re.match(r"\n\[\d/7\] ", line)]
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


def test_served_top5_is_the_trained_checkpoint_answer(quick_run, tmp_path):
    result, lines = quick_run
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


def test_pictures_have_the_layout_of_their_content(quick_run):
    result, _ = quick_run

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


def test_a_workdir_of_another_demo_is_refused_before_any_work(quick_run):
    result, _ = quick_run
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
    assert args.workdir is None and not args.quick
    args = build_parser().parse_args(["demo", "--quick", "--workdir", "out"])
    assert args.quick and str(args.workdir) == "out"


def test_demo_command_without_workdir_removes_its_temporary_outputs(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp creates it
    assert main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out
    workdir = re.search(r"Removed the temporary (\S+);", out)[1]
    assert workdir.startswith(str(tmp_path)) and not os.path.exists(workdir)
    written = re.findall(rf"^  \S+ +({re.escape(workdir)}\S*)$", out, re.MULTILINE)
    assert len(written) >= 10  # the closing summary listed every output
    assert "Summary" in out and "served: " in out
