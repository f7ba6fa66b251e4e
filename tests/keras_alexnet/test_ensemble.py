"""Ensembles [paper §6, Table 2]: evaluate, export and predict average several networks.

The reference for every ensemble figure is independent of the ensemble code: each
member's own single-model export, loaded with `tf.saved_model.load`, its columns put in
the first member's class order by a WNID lookup, averaged with numpy.  The two members
differ in every part of a contract: input size (64 and 72, so another rescale), mean,
channel order (BGR) and class order.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.commands import main
from keras_alexnet.contract import InputContract
from keras_alexnet.ensemble import load_members
from keras_alexnet.preprocessing import decode_center_crop
from keras_alexnet.saved_model import serving_functions
from serving.client import Client
from serving.server import ModelServer
from tests.keras_alexnet.test_predict import parse
from tests.keras_alexnet.training_helpers import make_dataset
from tests.serving.exported_model import make_images
from tfrecords_tools.schema import FEATURES

NUM_CLASSES = 4
WNIDS = [f"n{i:08d}" for i in range(NUM_CLASSES)]
ENSEMBLE = "ensemble"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ensemble") / "data",
                        num_classes=NUM_CLASSES, train_per_class=1, validation_per_class=5)


class Run(NamedTuple):
    path: Path  # the checkpoint
    model: keras.Model  # the same network, in memory


def network(dataset, seed, image_size=64, **contract) -> keras.Model:
    """A reduced network with a contract of its own (by default the data's)."""
    config = keras_alexnet.reduced_config(num_classes=NUM_CLASSES, image_size=image_size,
                                          biases_one=())  # untrained, yet varied outputs
    model = keras_alexnet.build_model(config, devices=("/CPU:0", "/CPU:0"), seed=seed)
    base = InputContract.from_data(dataset, image_size)
    fields = {"classes": base.classes, "image_size": image_size,
              "resize_size": base.resize_size, "mean": "channel", "mean_rgb": base.mean_rgb,
              **contract}
    model.input_contract = InputContract(**fields)
    return model


def saved(model, path) -> Run:
    return Run(checkpoints.save_checkpoint(model, path), model)


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """Two checkpoints: the data's contract at 64; 72 inputs (rescaled to 82), BGR,
    another mean and the classes in reverse order."""
    directory = tmp_path_factory.mktemp("runs")
    classes = InputContract.from_data(dataset, 64).classes
    return [saved(network(dataset, seed=1), directory / "a.keras"),
            saved(network(dataset, seed=2, image_size=72, resize_size=82,
                          mean_rgb=(90.0, 120.0, 150.0), channel_order="BGR",
                          classes=classes[::-1]), directory / "b.keras")]


@pytest.fixture(scope="module")
def singles(runs, tmp_path_factory):
    """Each member's own single-model export, loaded by TensorFlow."""
    base = tmp_path_factory.mktemp("singles")
    return [tf.saved_model.load(str(keras_alexnet.export(run.path, base, run.path.stem)))
            for run in runs]


@pytest.fixture(scope="module")
def ensemble_base(runs, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    assert main(["export", "--ensemble", *[str(run.path) for run in runs], "--export-base",
                 str(base),
                 "--model-name", ENSEMBLE]) == 0
    return base


@pytest.fixture(scope="module")
def images():
    return make_images()


def in_first_order(run, probabilities):
    """A member's columns in the first member's class order, looked up by WNID."""
    wnids = [wnid for wnid, _ in run.model.input_contract.classes]
    return probabilities[:, [wnids.index(wnid) for wnid in WNIDS]]


def mean_of_singles(runs, singles, signature="serving_default", **inputs):
    """The numpy reference: each single export's probabilities, matched, averaged."""
    members = [in_first_order(run, single.signatures[signature](**inputs)[
        "probabilities"].numpy()) for run, single in zip(runs, singles, strict=True)]
    return np.mean(members, axis=0), members


def first_names(runs):
    return [name for _, name in runs[0].model.input_contract.classes]


@pytest.mark.slow
def test_the_ensemble_export_averages_the_members_exports(runs, singles, ensemble_base,
                                                          images):
    encoded = tf.constant(list(images.values()))
    version_dir = ensemble_base / ENSEMBLE / "1"
    loaded = tf.saved_model.load(str(version_dir))
    outputs = loaded.signatures["serving_default"](image_bytes=encoded)
    reference, members = mean_of_singles(runs, singles, image_bytes=encoded)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), reference, atol=1e-6)
    for one in members:  # every member counts
        assert np.abs(one - reference).max() > 1e-3
    # Matching by WNID matters: b lists the classes in reverse order.
    b = singles[1].signatures["serving_default"](image_bytes=encoded)["probabilities"]
    assert np.abs((members[0] + b.numpy()) / 2 - reference).max() > 1e-3
    order = np.argsort(-reference, axis=1, kind="stable")
    np.testing.assert_array_equal(outputs["top_k_indices"].numpy(), order)
    names = first_names(runs)
    assert [[label.decode() for label in row] for row in outputs["top_k_labels"].numpy()] \
        == [[names[i] for i in row] for row in order]

    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
        .SerializeToString() for image in images.values()]
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    np.testing.assert_allclose(classified["scores"].numpy(),
                               np.take_along_axis(reference, order, 1), atol=1e-6)

    # fc7 side by side, in member order; the members take 64 and 72 pixels, so there is
    # no raw-pixel signature.
    features = loaded.signatures["features"](image_bytes=encoded)["fc7"].numpy()
    np.testing.assert_allclose(features, np.concatenate(
        [single.signatures["features"](image_bytes=encoded)["fc7"].numpy()
         for single in singles], axis=1), atol=1e-5)
    assert set(loaded.signatures) == {"serving_default", "classify", "features"}

    # Each member's weights once.
    params = sum(run.model.count_params() for run in runs)
    stored = sum(path.stat().st_size for path in (version_dir / "variables").iterdir())
    assert stored == pytest.approx(4 * params, rel=0.05)


def test_members_of_one_size_keep_the_raw_pixel_signature(runs, dataset):
    mean_image = np.random.default_rng(5).uniform(60, 200, (73, 73, 3)).astype(np.float32)
    pixel_mean = network(dataset, seed=3, mean="pixel", mean_image=mean_image)
    same_size = load_members([runs[0].model, pixel_mean])
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    outputs = serving_functions(same_size)["predict_images"](tf.constant(pixels))
    channel_mean = np.float32(runs[0].model.input_contract.mean_rgb)
    reference = (runs[0].model(pixels - channel_mean).numpy() +
                 pixel_mean(pixels - mean_image[4:68, 4:68]).numpy()) / 2  # centre window
    np.testing.assert_allclose(outputs["probabilities"].numpy(), reference, atol=1e-6)
    assert "predict_images" not in serving_functions(load_members([r.model for r in runs]))


def validation_images(dataset):
    encoded, labels = [], []
    for path in sorted(dataset.glob("validation-*")):
        for record in tf.data.TFRecordDataset(str(path)):
            features = tf.io.parse_single_example(record, FEATURES)
            encoded.append(features["image/encoded"].numpy())
            labels.append(int(features["image/class/label"]))
    return encoded, np.array(labels)


def ten_patch_scores(run, encoded):
    """A member's 10-patch softmax [paper §4.1] by numpy slicing of its rescaled square."""
    contract = run.model.input_contract
    size, square = contract.image_size, contract.resize_size
    far, mid = square - size, (square - size) // 2
    patches = []
    for image in encoded:
        pixels = decode_center_crop(tf.constant(image), square, square).numpy()
        pixels = pixels - np.float32(contract.mean_rgb)
        if contract.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        five = [pixels[top:top + size, left:left + size]
                for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
        patches += five + [patch[:, ::-1] for patch in five]
    scores = run.model(np.stack(patches), training=False).numpy()
    return in_first_order(run, scores.reshape(len(encoded), 10, -1).mean(axis=1))


def top1_error(probabilities, labels):
    return np.mean(probabilities.argmax(axis=1) != labels)


@pytest.mark.slow
def test_evaluates_ensemble_error_is_the_error_of_the_mean(runs, singles, dataset, capsys):
    result = keras_alexnet.evaluate([run.path for run in runs], dataset, batch_size=8)
    encoded, labels = validation_images(dataset)
    centre, members = mean_of_singles(runs, singles, image_bytes=tf.constant(encoded))
    ten = np.mean([ten_patch_scores(run, encoded) for run in runs], axis=0)
    assert result["images"] == len(labels) == 20
    assert result["center"]["top1_error"] == pytest.approx(top1_error(centre, labels))
    assert result["ten_crop"]["top1_error"] == pytest.approx(top1_error(ten, labels))
    for entry, run, one in zip(result["members"], runs, members, strict=True):
        assert entry["checkpoint"] == entry["source"] == str(run.path)
        assert entry["center"]["top1_error"] == pytest.approx(top1_error(one, labels))
    first = result["per_class"][0]
    assert first["ten_crop_top1_accuracy"] == pytest.approx(
        np.mean(ten[labels == 0].argmax(axis=1) == 0))
    assert result["checkpoint"] is None
    table = capsys.readouterr().out.splitlines()
    rows = [(str(run.path), entry) for run, entry in zip(runs, result["members"], strict=True)]
    for name, row in [*rows, ("ensemble of 2", result)]:
        line = next(line for line in table if line.startswith(name))
        assert line[len(name):].split() == [f"{100 * row[crop][error]:.2f}%"
                                    for crop in ("center", "ten_crop")
                                    for error in ("top1_error", "top5_error")]


@pytest.mark.slow
def test_the_commands_take_several_runs(runs, singles, dataset, ensemble_base, images,
                                        tmp_path, capsys):
    paths = [str(run.path) for run in runs]
    output = tmp_path / "eval.json"
    assert main(["evaluate", *paths, str(dataset), "--center-only", "--output",
                 str(output)]) == 0
    result = json.loads(output.read_text())
    encoded, labels = validation_images(dataset)
    centre, _ = mean_of_singles(runs, singles, image_bytes=tf.constant(encoded))
    assert [m["source"] for m in result["members"]] == paths
    assert result["center"]["top1_error"] == pytest.approx(top1_error(centre, labels))
    assert "ten_crop" not in result

    files = []
    for name, image in images.items():
        (tmp_path / name).write_bytes(image)
        files.append(str(tmp_path / name))
    capsys.readouterr()
    assert main(["predict", *files, "--checkpoint", paths[0], "--checkpoint", paths[1]]) == 0
    printed = parse(capsys.readouterr().out)
    assert list(printed) == files
    reference, _ = mean_of_singles(runs, singles,
                                   image_bytes=tf.constant(list(images.values())))
    names = first_names(runs)
    for top5, row in zip(printed.values(), reference, strict=True):
        order = np.argsort(-row, kind="stable")
        assert [name for name, _ in top5] == [names[i] for i in order]
        assert [p for _, p in top5] == pytest.approx(row[order], abs=1e-4)


def test_the_local_server_serves_the_ensemble(runs, singles, ensemble_base, images):
    reference, _ = mean_of_singles(runs, singles,
                                   image_bytes=tf.constant(list(images.values())))
    with ModelServer(ensemble_base / ENSEMBLE, ENSEMBLE, port=0) as server, \
            Client(server.address, ENSEMBLE, timeout=60, retries=0) as client:
        top5 = client.classify(list(images.values()))
        assert {"serving_default", "classify", "features"} <= set(client.metadata())
    names = first_names(runs)
    for got, row in zip(top5, reference, strict=True):
        order = np.argsort(-row, kind="stable")
        assert [name for name, _ in got] == [names[i] for i in order]
        np.testing.assert_allclose([p for _, p in got], row[order], atol=1e-6)


def test_a_member_lacking_a_class_or_the_shards_order_is_refused(runs, dataset, tmp_path, capsys):
    classes = InputContract.from_data(dataset, 64).classes
    other = saved(network(dataset, seed=4, classes=(*classes[:3], ("n00000009", "class 9"))),
                  tmp_path / "other.keras")
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{other.path} has no class n00000003 (class 3), which {runs[0].path} has: ")):
        load_members([runs[0].path, other.path])
    assert main(["export", "--ensemble", str(other.path), str(runs[0].path), "--export-base",
                 str(tmp_path / "export")]) == 1
    assert (f"error: {runs[0].path} has no class n00000009 (class 9), which {other.path} "
            f"has: an ensemble's members must share their classes (matched by WNID)") in \
        capsys.readouterr().err
    assert not (tmp_path / "export").exists()
    with pytest.raises(ValueError, match="no model given"):
        load_members([])
    # A contract that does not fit its own network (set by hand) is named.
    mismatched = network(dataset, seed=5)
    contract = mismatched.input_contract
    mismatched.input_contract = dataclasses.replace(contract, classes=contract.classes[:3])
    with pytest.raises(ValueError, match=r"^model 'alexnet' \(member 2\): its input "
                                         r"contract lists 3 classes but the model outputs 4"):
        load_members([runs[0].model, mismatched])
    mismatched.input_contract = dataclasses.replace(contract, image_size=72)
    with pytest.raises(ValueError, match=r"^model 'alexnet': its input contract is for "
                                         r"72x72 inputs but the model takes 64"):
        load_members(mismatched)
    # The ensemble's classes are in its first member's order, which the shards' must be.
    with pytest.raises(ValueError, match=re.escape(
            f"classes {runs[1].path} (the ensemble's first member, whose class order it "
            f"takes) was trained on (other WNIDs or another order)")):
        keras_alexnet.evaluate([runs[1].path, runs[0].path], dataset)
