"""`python -m keras_alexnet predict`: top-5 class names from a checkpoint or a SavedModel."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from keras_alexnet.commands import main
from tests.keras_alexnet.old_checkpoints import save_without_contract
from tests.serving.exported_model import expected_top5


@pytest.fixture(scope="module")
def image_files(exported, tmp_path_factory):
    directory = tmp_path_factory.mktemp("images")
    paths = []
    for name, encoded in exported.images.items():
        path = directory / name
        path.write_bytes(encoded)
        paths.append(str(path))
    return paths


def parse(output: str) -> dict[str, list[tuple[str, float]]]:
    results, current = {}, None
    for line in output.splitlines():
        match = re.match(r"^\s+\d\.\s+([\d.]+)\s+(.+)$", line)
        if match:
            results[current].append((match.group(2), float(match.group(1))))
        else:
            current = line
            results[current] = []
    return results


@pytest.mark.parametrize("source", ["checkpoint", "saved-model"])
def test_predict_prints_the_models_top5(source, exported, image_files, capsys):
    args = (["--checkpoint", str(exported.checkpoint)] if source == "checkpoint"
            else ["--saved-model", str(exported.model_dir)])
    assert main(["predict", *image_files, *args]) == 0
    printed = parse(capsys.readouterr().out)
    assert list(printed) == image_files
    expected = expected_top5(exported.model, list(exported.images.values()))
    for top5, want in zip(printed.values(), expected, strict=True):
        assert [name for name, _ in top5] == [name for name, _ in want]
        assert [p for _, p in top5] == pytest.approx([p for _, p in want], abs=1e-4)


def test_bad_image_and_a_checkpoint_without_contract_are_named(exported, image_files,
                                                               tmp_path, capsys):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("no pixels here")
    assert main(["predict", image_files[0], str(not_an_image), "--saved-model",
                 str(exported.model_dir)]) == 1
    assert f"{not_an_image}: not a JPEG or PNG image" in capsys.readouterr().err
    # A GIF (which the converter takes for training) is refused by name.
    gif = tmp_path / "photo.gif"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(gif)
    assert main(["predict", str(gif), "--saved-model", str(exported.model_dir)]) == 1
    assert f"{gif}: a GIF, not a JPEG or PNG image; convert it to PNG first" in \
        capsys.readouterr().err

    # Saved before contracts were recorded: it needs the data directory.
    legacy = save_without_contract(exported.model, tmp_path / "legacy.keras")
    assert main(["predict", image_files[0], "--checkpoint", str(legacy)]) == 1
    assert (f"error: {legacy} was saved without its input contract (classes, mean); give "
            f"the shard directory it was trained on (data_dir, --data-dir)") in \
        capsys.readouterr().err
    assert main(["predict", *image_files, "--checkpoint", str(legacy), "--data-dir",
                 str(exported.data_dir)]) == 0
    printed = parse(capsys.readouterr().out)
    expected = expected_top5(exported.model, list(exported.images.values()))
    for top5, want in zip(printed.values(), expected, strict=True):
        assert [name for name, _ in top5] == [name for name, _ in want]
