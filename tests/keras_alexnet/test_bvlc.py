"""keras_alexnet.bvlc: BVLC AlexNet files (generated here, random weights) into the two-tower
model, checked against onnxruntime running the same ONNX file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.bvlc import (
    CAFFE_MEAN_RGB,
    bvlc_config,
    check_network,
    import_weights,
    read_caffemodel,
    read_onnx,
)
from keras_alexnet.commands import main
from keras_alexnet.errors import CheckpointError
from keras_alexnet.saved_model import classify_files
from tests.keras_alexnet.bvlc_files import (
    random_weights,
    write_caffemodel,
    write_mean_binaryproto,
    write_onnx,
    write_torchvision_alexnet_onnx,
)
from tfrecords_tools.schema import FEATURES

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # the full 61-million-parameter network, several times

SIZE = 227


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bvlc")
    weights = random_weights()
    return {"weights": weights,
            "onnx": write_onnx(directory / "bvlcalexnet-12.onnx", weights),
            "caffe": write_caffemodel(directory / "bvlc_alexnet.caffemodel", weights),
            "caffe_v1": write_caffemodel(directory / "v1.caffemodel", weights, v1=True),
            "directory": directory}


@pytest.fixture(scope="module")
def imported(files, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("imported")
    labels = files["directory"] / "synset_words.txt"
    labels.write_text("".join(f"n{i:08d} class {i}, the {i}th\n" for i in range(1000)))
    path = import_weights(files["onnx"], model_dir, labels=labels)
    return model_dir, path


def caffe_inputs(seed: int = 0) -> np.ndarray:
    """Preprocessed inputs as Caffe and the zoo feed them: NCHW, BGR, mean subtracted."""
    return np.random.default_rng(seed).normal(0, 50, (3, 3, SIZE, SIZE)).astype(np.float32)


def onnx_probabilities(path, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"data_0": inputs})[0]


def our_inputs(inputs: np.ndarray) -> np.ndarray:
    """The same tensor as this model reads it: NHWC, RGB."""
    return np.ascontiguousarray(inputs.transpose(0, 2, 3, 1)[..., ::-1])


def test_the_imported_model_equals_onnxruntime_on_the_same_file(files, imported):
    model_dir, path = imported
    assert path == checkpoints.checkpoint_path(model_dir, 0)
    model = checkpoints.load_model(model_dir, compile=False)
    assert model.count_params() == 60_965_224
    assert model.input_shape == (None, SIZE, SIZE, 3)
    inputs = caffe_inputs()
    expected = onnx_probabilities(files["onnx"], inputs)
    assert expected.max(axis=1).min() > 0.01  # not a flat softmax: the test can fail
    got = model.predict(our_inputs(inputs), verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()

    contract = model.input_contract
    assert contract.mean == "channel" and contract.mean_rgb == CAFFE_MEAN_RGB
    assert (contract.image_size, contract.resize_size) == (SIZE, 256)
    assert contract.classes[3] == ("n00000003", "class 3, the 3th")


def test_the_exported_savedmodel_equals_onnxruntime_too(files, imported, tmp_path):
    model_dir, _ = imported
    version_dir = keras_alexnet.export(model_dir, tmp_path / "export")
    signature = tf.saved_model.load(str(version_dir)).signatures["predict_images"]
    inputs = caffe_inputs(1)
    # predict_images takes 0-255 RGB pixels and subtracts the contract's mean itself.
    pixels = our_inputs(inputs) + np.float32(CAFFE_MEAN_RGB)
    outputs = signature(images=tf.constant(pixels))
    np.testing.assert_allclose(outputs["probabilities"].numpy(),
                               onnx_probabilities(files["onnx"], inputs), atol=1e-5, rtol=1e-4)
    assert outputs["top_k_labels"].numpy()[0, 0].decode().startswith("class ")


def test_caffes_rounded_up_pooling_written_as_end_padding_is_accepted(files, tmp_path):
    padded = write_onnx(tmp_path / "padded.onnx", files["weights"], ceil_pads=True)
    check_network(read_onnx(padded), str(padded))
    inputs = caffe_inputs(2)
    np.testing.assert_array_equal(onnx_probabilities(padded, inputs),
                                  onnx_probabilities(files["onnx"], inputs))


@pytest.mark.parametrize("kind", ["caffe", "caffe_v1"])
def test_the_caffemodel_route_gives_the_onnx_routes_weights(files, kind):
    caffe, from_onnx = read_caffemodel(files[kind]), read_onnx(files["onnx"])
    assert [layer.kind for layer in caffe] == [layer.kind for layer in from_onnx]
    for mine, theirs in zip(caffe, from_onnx, strict=True):
        assert mine.params == {**theirs.params, **{k: v for k, v in mine.params.items()
                                                   if k not in theirs.params}}
        if mine.weight is not None:
            np.testing.assert_array_equal(mine.weight, theirs.weight)
            np.testing.assert_array_equal(mine.bias, theirs.bias)
    # Caffe's fc weights come back as (out, in) from either blob layout.
    weight, _ = files["weights"]["fc6"]
    np.testing.assert_array_equal(caffe[10].weight, weight)


def test_the_caffemodel_imports_to_the_same_keras_weights(files, imported, tmp_path):
    from_caffe = checkpoints.load_model(import_weights(files["caffe_v1"], tmp_path),
                                        compile=False)
    from_onnx = checkpoints.load_model(imported[0], compile=False)
    for mine, theirs in zip(from_caffe.weights, from_onnx.weights, strict=True):
        assert mine.path == theirs.path
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_a_mean_image_and_the_cli(files, tmp_path, capsys):
    mean_bgr = np.random.default_rng(3).uniform(90, 130, (3, 256, 256)).astype(np.float32)
    mean_file = write_mean_binaryproto(tmp_path / "ilsvrc_2012_mean.binaryproto", mean_bgr)
    assert main(["import-weights", str(files["caffe"]), str(tmp_path / "run"),
                 "--mean-image", str(mean_file)]) == 0
    assert capsys.readouterr().out.strip() == str(checkpoints.checkpoint_path(
        tmp_path / "run", 0))
    contract = checkpoints.read_contract(tmp_path / "run")
    assert contract.mean == "pixel"
    np.testing.assert_array_equal(contract.mean_image, mean_bgr.transpose(1, 2, 0)[..., ::-1])
    assert contract.names[0] == "class 0"  # no --labels: unnamed classes

    assert main(["pictures", "kernels", str(tmp_path / "run"), "-o",
                 str(tmp_path / "kernels.png")]) == 0
    assert (tmp_path / "kernels.png").stat().st_size > 0
    assert main(["import-weights", str(files["caffe"]), str(tmp_path / "run")]) == 1
    assert "epoch-0000.keras already exists" in capsys.readouterr().err


def test_wrong_files_are_refused_naming_the_first_difference(files, tmp_path, capsys):
    torchvision = write_torchvision_alexnet_onnx(tmp_path / "alexnet-torchvision.onnx")
    with pytest.raises(ValueError, match=r"'features.0.out' \(conv1\) has outputs 64, expected "
                                         r"96; not BVLC AlexNet"):
        import_weights(torchvision, tmp_path / "a")

    vgg_like = dict(files["weights"])
    vgg_like["conv1"] = (np.zeros((96, 3, 3, 3), np.float32), vgg_like["conv1"][1])
    write_onnx(tmp_path / "vgg.onnx", vgg_like)
    with pytest.raises(ValueError, match=r"\(conv1\) has weights \(96, 3, 3, 3\) and biases "
                                         r"\(96,\), expected \(96, 3, 11, 11\)"):
        import_weights(tmp_path / "vgg.onnx", tmp_path / "b")

    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(files["caffe"].read_bytes()[:50_000_000])
    with pytest.raises(ValueError, match=rf"{truncated}: not a Caffe model .* is the file "
                                         rf"complete\?"):
        import_weights(truncated, tmp_path / "c")
    assert main(["import-weights", str(tmp_path / "vgg.onnx"), str(tmp_path / "d")]) == 1
    assert "expected (96, 3, 11, 11)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"expected a \.caffemodel or an \.onnx file"):
        import_weights(tmp_path / "weights.h5", tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_bvlc_weights_refuse_a_cnn_star_config_naming_conv6(imported):
    config = dataclasses.replace(bvlc_config(), conv6=True)
    with pytest.raises(CheckpointError, match=r"the checkpoint has conv6 \(CNN\*\) no but "
                                              r"the config gives yes"):
        keras_alexnet.build_model(config, weights=imported[1])


def test_fit_fine_tunes_from_the_imported_checkpoint(imported, tmp_path):
    from tests.keras_alexnet.training_helpers import write_split

    model_dir = tmp_path / "run"
    (model_dir / "checkpoints").mkdir(parents=True)
    source = imported[1]
    (model_dir / "checkpoints" / source.name).write_bytes(source.read_bytes())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_split(data_dir, "train", [0, 1, 2, 3] * 2, size=256, num_shards=2)
    (data_dir / "labels.txt").write_text(
        "".join(f"n{i:08d}\tclass {i}, the {i}th\n" for i in range(1000)))
    before = checkpoints.load_model(source, compile=False).get_weights()
    # evaluate and predict take the imported run like any other.
    result = keras_alexnet.evaluate(model_dir, data_dir, "train", ten_crop=False,
                                    verbose=False)
    assert result["images"] == 8 and result["per_class"][0]["wnid"] == "n00000000"
    image = tmp_path / "photo.jpg"
    image.write_bytes(next(iter(tf.data.TFRecordDataset(
        str(sorted(data_dir.glob("train-*"))[0])).map(
        lambda r: tf.io.parse_single_example(r, FEATURES)["image/encoded"]))).numpy())
    top5 = classify_files([image], checkpoint=model_dir)[0]
    assert len(top5) == 5 and all(name.startswith("class ") for name, _ in top5)
    history = keras_alexnet.fit(data_dir, model_dir, epochs=1, steps_per_epoch=1,
                                batch_size=4, learning_rate=1e-4, backup_every=0,
                                tensorboard=False, verbose=0, seed=0)
    model = history.model
    assert int(model.optimizer.iterations.numpy()) == 1
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    after = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    saved = checkpoints.load_model(model_dir)
    assert saved.input_contract.mean_rgb == CAFFE_MEAN_RGB  # the contract carried on
    assert checkpoints.list_checkpoints(model_dir)[-1][0] == 1


def test_classes_come_from_a_devkit_a_synset_words_file_or_labels_txt(sample_archives,
                                                                      tmp_path):
    from keras_alexnet.bvlc import read_classes
    from tfrecords_tools.devkit import read_devkit

    devkit = read_devkit(sample_archives.devkit).classes
    classes = read_classes(sample_archives.devkit, len(devkit.wnids))
    assert [w for w, _ in classes] == sorted(devkit.wnids)
    labels = tmp_path / "labels.txt"
    labels.write_text(devkit.labels_txt())
    assert read_classes(labels, len(devkit.wnids)) == classes
    words = tmp_path / "synset_words.txt"
    words.write_text("".join(f"{w} {n}\n" for w, n in classes))
    assert read_classes(words, len(devkit.wnids)) == classes
    with pytest.raises(ValueError, match=f"{words} lists 10 classes but the model has 1000"):
        read_classes(words, 1000)
