"""`python -m keras_alexnet features`: fc7 of image files and directories [paper §6.1],
checked against the exported SavedModel's `features` signature."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import pretrained
from keras_alexnet.commands import main
from keras_alexnet.pretrained import ENVIRONMENT_VARIABLE, Published
from keras_alexnet.saved_model import FEATURES_SIGNATURE, latest_version_dir


@pytest.fixture
def photos(exported, tmp_path):
    """A tree of the exported model's test images, with what a directory must skip."""
    root = tmp_path / "photos"
    for path, name in [("a/deeper/gray.png", "gray.png"), ("a/deeper/image2.jpg", "image2.jpg"),
                       ("a/deeper/noise.png", "noise.png"), ("b/IMAGE1.JPG", "image1.jpg"),
                       ("b/image0.jpg", "image0.jpg"), ("b/image3.jpg", "image3.jpg")]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(exported.images[name])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(exported.images["image0.jpg"])
    (root / ".cache").mkdir()
    (root / ".cache" / "thumb.jpg").write_bytes(exported.images["image0.jpg"])
    return root


def served_fc7(exported, paths) -> np.ndarray:
    """The reference: the exported SavedModel's `features` signature on the same bytes."""
    loaded = tf.saved_model.load(str(latest_version_dir(exported.model_dir)))
    encoded = tf.constant([path.read_bytes() for path in paths])
    return loaded.signatures[FEATURES_SIGNATURE](image_bytes=encoded)["fc7"].numpy()


def test_writes_fc7_and_the_paths_in_order(exported, photos, tmp_path, capsys):
    single = photos / "b" / "IMAGE1.JPG"
    output = tmp_path / "out" / "features.npy"
    output.parent.mkdir()
    assert main(["features", str(exported.checkpoint), str(photos), str(single), "-o",
                 str(output)]) == 0
    paths = [p for p in (tmp_path / "out" / "features.txt").read_text().split("\n") if p]
    expected = [photos / "a/deeper/gray.png", photos / "a/deeper/image2.jpg",
                photos / "a/deeper/noise.png", photos / "b/IMAGE1.JPG",
                photos / "b/image0.jpg", photos / "b/image3.jpg", single]
    assert paths == [str(path) for path in expected]
    features = np.load(output)
    width = keras_alexnet.fc7_features(exported.model).output_shape[-1]
    assert features.dtype == np.float32 and features.shape == (7, width)
    np.testing.assert_allclose(features, served_fc7(exported, expected), rtol=1e-4,
                               atol=1e-4)
    assert not np.allclose(features[0], features[1])  # the images are told apart
    assert capsys.readouterr().out == (
        f"wrote the fc7 features of 7 images (7x{width} float32) to {output} and their "
        f"paths to {output.with_suffix('.txt')}\n")


def test_the_library_function_behind_the_command(exported, photos):
    from keras_alexnet.features import find_images

    paths = find_images([photos / "b"])
    (photos / "b" / "empty.jpg").write_bytes(b"")
    found = keras_alexnet.extract_features(exported.model, [*paths, photos / "b" / "empty.jpg"],
                                           batch_size=2, progress=False)
    assert found.paths == paths
    assert found.skipped == [(photos / "b" / "empty.jpg", "not a JPEG or PNG image")]
    np.testing.assert_allclose(found.rows, served_fc7(exported, paths), rtol=1e-4, atol=1e-4)


def test_an_image_that_does_not_decode_is_skipped_and_named(exported, photos, tmp_path,
                                                            capsys):
    broken = photos / "b" / "broken.jpg"
    broken.write_text("no pixels here")
    output = tmp_path / "feats" / "features.npy"  # feats/ made for it
    # Batches of two: the progress bar shows, and a batch keeps one image of two.
    assert main(["features", str(exported.checkpoint), str(photos / "b"), "-o",
                 str(output), "--batch-size", "2"]) == 1  # not 0: an image was left out
    captured = capsys.readouterr()
    assert f"{broken}: skipped, not a JPEG or PNG image" in captured.err
    assert "fc7 features: 100%" in captured.err and "4/4" in captured.err
    assert captured.out.endswith("; skipped 1 that did not decode (named above)\n")
    kept = [photos / "b" / name for name in ("IMAGE1.JPG", "image0.jpg", "image3.jpg")]
    assert output.with_suffix(".txt").read_text() == "".join(f"{p}\n" for p in kept)
    np.testing.assert_allclose(np.load(output), served_fc7(exported, kept), rtol=1e-4,
                               atol=1e-4)

    # Nothing decodes: an error, and nothing is written.
    assert main(["features", str(exported.checkpoint), str(broken), "-o",
                 str(tmp_path / "none.npy")]) == 1
    assert (f"error: none of the 1 images decodes ({broken}: not a JPEG or PNG image); "
            f"nothing written") in capsys.readouterr().err
    assert not (tmp_path / "none.npy").exists() and not (tmp_path / "none.txt").exists()


def test_bad_arguments_are_one_line_before_the_model_loads(exported, photos, tmp_path,
                                                           capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("")
    for args, message in [
        ([str(tmp_path / "missing.jpg")], f"{tmp_path / 'missing.jpg'}: no such image file "
                                          f"or directory"),
        ([str(empty)], f"{empty}: no .jpg, .jpeg, .png files in it or its subdirectories"),
        ([str(photos), "-o", str(tmp_path / "f.txt")], "must end in .npy"),
    ]:
        assert main(["features", "no-such-run", *args]) == 1
        assert message in capsys.readouterr().err
    # A model without its top has no fc7.
    body = tmp_path / "body.keras"
    keras_alexnet.build_model(weights=exported.checkpoint, include_top=False).save(body)
    assert main(["features", str(body), str(photos), "-o", str(tmp_path / "f.npy")]) == 1
    assert "has no fc7 (built with include_top=False, it ends at pool5)" in \
        capsys.readouterr().err


def test_weights_by_name(exported, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setitem(pretrained.PUBLISHED, "tiny", Published(
        "http://127.0.0.1:9/tiny.caffemodel", hashlib.sha1(b"unused").hexdigest()))
    (tmp_path / "keras" / "models").mkdir(parents=True)
    shutil.copyfile(exported.checkpoint, tmp_path / "keras" / "models" / "tiny.keras")
    output = tmp_path / "features.npy"
    assert main(["features", "tiny", str(photos / "b" / "image0.jpg"), "-o",
                 str(output)]) == 0
    np.testing.assert_allclose(np.load(output),
                               served_fc7(exported, [photos / "b" / "image0.jpg"]),
                               rtol=1e-4, atol=1e-4)
