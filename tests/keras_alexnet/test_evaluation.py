"""keras_alexnet.evaluate: the paper's centre-crop and 10-patch errors, per class."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.commands import main
from tests.keras_alexnet.training_helpers import REDUCED, make_dataset
from tfrecords_tools.schema import FEATURES
from tfrecords_tools.stats import load_stats

SIZE, RESIZE = 64, 73


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("eval") / "data", train_per_class=2,
                        validation_per_class=6)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)  # untrained, but its wide init gives varied outputs
    return keras_alexnet.build_model(REDUCED)


def expected_scores(model, dataset):
    """Centre-crop and 10-patch softmax computed independently with numpy slicing."""
    mean = load_stats(dataset).mean_rgb * 255.0
    far, mid = RESIZE - SIZE, (RESIZE - SIZE) // 2
    patches, labels = [], []
    for path in sorted(dataset.glob("validation-*")):
        for record in tf.data.TFRecordDataset(str(path)):
            features = tf.io.parse_single_example(record, FEATURES)
            image = tf.io.decode_jpeg(features["image/encoded"]).numpy() - mean
            assert image.shape == (RESIZE, RESIZE, 3)
            five = [image[top:top + SIZE, left:left + SIZE] for top, left in
                    ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
            patches += five + [patch[:, ::-1] for patch in five]
            labels.append(int(features["image/class/label"]))
    probabilities = model.predict(np.stack(patches), verbose=0).reshape(len(labels), 10, -1)
    return probabilities[:, 4], probabilities.mean(axis=1), np.array(labels)


def test_errors_and_per_class_accuracy_match_an_independent_computation(model, dataset,
                                                                        tmp_path, capsys):
    output = tmp_path / "results" / "validation.json"
    result = keras_alexnet.evaluate(model, dataset, batch_size=5, output=output)
    centre, ten, labels = expected_scores(model, dataset)
    assert result["images"] == len(labels) == 24
    for crop, scores in (("center", centre), ("ten_crop", ten)):
        top1 = scores.argmax(axis=1)
        assert result[crop]["top1_error"] == pytest.approx(np.mean(top1 != labels))
        assert result[crop]["top5_error"] == 0.0  # four classes: always in the top 5
        for entry in result["per_class"]:
            mine = labels == entry["label"]
            assert entry["images"] == 6
            assert entry[f"{crop}_top1_accuracy"] == pytest.approx(np.mean(top1[mine] ==
                                                                           entry["label"]))
    assert [c["wnid"] for c in result["per_class"]] == [f"n{i:08d}" for i in range(4)]
    assert not np.allclose(centre, ten)  # the ten patches do change the scores
    assert json.loads(output.read_text()) == result
    table = capsys.readouterr().out
    assert f"centre crop{100 * result['center']['top1_error']:14.2f}%" in table
    assert f"10 patches{100 * result['ten_crop']['top1_error']:15.2f}%" in table


def test_top5_error_counts_labels_outside_the_five_best(dataset):
    keras.utils.set_random_seed(2)
    ten_classes = keras_alexnet.build_model(REDUCED, num_classes=10)
    labels = dataset.parent / "ten-labels"
    labels.mkdir()
    for path in dataset.iterdir():
        (labels / path.name).symlink_to(path)
    (labels / "labels.txt").unlink()
    (labels / "labels.txt").write_text("".join(f"n{i:08d}\tc{i}\n" for i in range(10)))
    result = keras_alexnet.evaluate(ten_classes, labels, ten_crop=False, verbose=False)
    assert "ten_crop" not in result
    centre, _, truth = expected_scores(ten_classes, labels)
    top5 = np.argsort(-centre, axis=1)[:, :5]
    assert result["center"]["top5_error"] == pytest.approx(
        np.mean(~(top5 == truth[:, None]).any(axis=1)))
    assert result["per_class"][9]["images"] == 0
    assert result["per_class"][9]["center_top1_accuracy"] is None


def test_the_evaluate_command_reads_a_model_directory(model, dataset, tmp_path, capsys):
    checkpoint = checkpoints.save_checkpoint(model, checkpoints.checkpoint_path(tmp_path, 7))
    output = tmp_path / "eval.json"
    assert main(["evaluate", str(tmp_path), str(dataset), "--center-only",
                 "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["checkpoint"] == str(checkpoint)
    assert "ten_crop" not in result and "10 patches" not in capsys.readouterr().out


def test_missing_checkpoints_and_mismatched_labels_are_named(model, dataset, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), str(dataset)]) == 1
    assert f"{tmp_path}: no checkpoints" in capsys.readouterr().err
    three = make_dataset(tmp_path / "three", num_classes=3, train_per_class=1,
                         validation_per_class=1)
    with pytest.raises(ValueError, match=f"{three / 'labels.txt'} lists 3 classes but model "
                                         f"'alexnet' outputs 4"):
        keras_alexnet.evaluate(model, three)
    with pytest.raises(FileNotFoundError, match="no test shards"):
        keras_alexnet.evaluate(model, dataset, split="test")


def test_the_data_directory_is_read_once(model, dataset, monkeypatch):
    """labels.txt, the manifest, the stats and the shard listing: once each, though the
    contract, the class check, the shard check and the pipeline all use them."""
    from tfrecords_tools import dataset as dataset_module
    from tfrecords_tools import schema

    calls = {"read_labels": 0, "load_stats": 0, "iterdir": 0}

    def counting(module, name):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)

    counting(schema, "read_labels")
    counting(dataset_module, "load_stats")
    listed = []
    original_iterdir = type(dataset).iterdir
    monkeypatch.setattr(type(dataset), "iterdir",
                        lambda self: listed.append(self) or original_iterdir(self))
    keras_alexnet.evaluate(model, dataset, batch_size=8, ten_crop=False, verbose=False)
    assert calls["read_labels"] == 1 and calls["load_stats"] == 1
    assert listed.count(dataset) == 1
