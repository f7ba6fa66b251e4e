"""`keras_alexnet.export`: the SavedModel's signatures compute what the Keras model does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.contract import InputContract
from keras_alexnet.preprocessing import decode_center_crop
from keras_alexnet.saved_model import WARMUP_FILE
from serving.servables import read_meta_graph
from serving.tensors import to_ndarray
from tests.serving.exported_model import (
    CLASS_NAMES,
    DATA_MEAN,
    MODEL_NAME,
    build_test_model,
    expected_top5,
    keras_probabilities,
)
from tfrecords_tools.stats import IMAGENET_MEAN_RGB


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported.model_dir / "1"))


def test_serving_default_equals_the_keras_model_on_encoded_images(exported, loaded):
    encoded = list(exported.images.values())
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    reference = keras_probabilities(exported.model, DATA_MEAN, encoded)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), reference, atol=1e-6)
    order = np.argsort(-reference, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(outputs["top_k_indices"].numpy(), order)
    np.testing.assert_allclose(outputs["top_k_scores"].numpy(),
                               np.take_along_axis(reference, order, 1), atol=1e-6)
    labels = [[label.decode() for label in row] for row in outputs["top_k_labels"].numpy()]
    assert labels == [[CLASS_NAMES[i] for i in row] for row in order]
    assert outputs["top_k_indices"].dtype == tf.int32


def test_the_contracts_mean_is_in_the_graph(exported, loaded):
    # Reference with ImageNet's mean instead of the contract's: must differ.
    encoded = list(exported.images.values())[:1]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    imagenet = keras_probabilities(exported.model, np.float32(IMAGENET_MEAN_RGB) * 255, encoded)
    assert not np.allclose(outputs["probabilities"].numpy(), imagenet, atol=1e-6)


def test_classify_signature_answers_serialized_examples(exported, loaded):
    encoded = list(exported.images.values())
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
        .SerializeToString() for image in encoded]
    outputs = loaded.signatures["classify"](inputs=tf.constant(examples))
    expected = expected_top5(exported.model, encoded)
    assert [[c.decode() for c in row] for row in outputs["classes"].numpy()] == \
        [[name for name, _ in row] for row in expected]
    np.testing.assert_allclose(outputs["scores"].numpy(),
                               [[p for _, p in row] for row in expected], atol=1e-6)
    signature = read_meta_graph(exported.model_dir / "1").signature_def["classify"]
    assert signature.method_name == "tensorflow/serving/classify"
    assert list(signature.inputs) == ["inputs"]
    assert set(signature.outputs) == {"classes", "scores"}


def test_the_paper_networks_weights_are_stored_once(tmp_path):
    model = keras_alexnet.build_model(devices=("", ""))
    model.input_contract = InputContract(
        tuple((f"n{i:08d}", f"class {i}") for i in range(1000)), 224, 256, "channel",
        (124.0, 116.0, 104.0))
    version_dir = keras_alexnet.export(model, tmp_path)
    stored = sum(path.stat().st_size for path in (version_dir / "variables").iterdir())
    assert model.count_params() == 60_965_224
    assert stored == pytest.approx(4 * model.count_params(), rel=0.05)


def test_raw_pixels_and_features_signatures(exported, loaded):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    outputs = loaded.signatures["predict_images"](images=tf.constant(pixels))
    mean = np.float32([0.3, 0.5, 0.7]) * 255
    np.testing.assert_allclose(outputs["probabilities"].numpy(),
                               exported.model(pixels - mean).numpy(), atol=1e-6)
    encoded = list(exported.images.values())[:2]
    features = loaded.signatures["features"](image_bytes=tf.constant(encoded))["fc7"].numpy()
    crops = tf.stack([decode_center_crop(tf.constant(b), 64) for b in encoded])
    reference = keras_alexnet.fc7_features(exported.model)(crops - mean).numpy()
    np.testing.assert_allclose(features, reference, atol=1e-5)


def test_empty_batch_gives_empty_outputs(loaded):
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert outputs["probabilities"].shape == (0, 10)
    assert outputs["top_k_labels"].shape == (0, 5)


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(exported):
    shown = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
         str(exported.model_dir / "1"), "--all"], capture_output=True, text=True, check=True)
    text = shown.stdout
    for signature in ("serving_default", "classify", "predict_images", "features"):
        assert f"signature_def['{signature}']" in text
    default = text.split("signature_def['serving_default']")[1]
    assert "inputs['image_bytes']" in default and "DT_STRING" in default
    assert "shape: (-1)" in default
    for output in ("probabilities", "top_k_indices", "top_k_scores", "top_k_labels"):
        assert f"outputs['{output}']" in default


def test_warmup_file_holds_a_replayable_predict_request(exported, loaded):
    records = list(tf.data.TFRecordDataset(str(exported.model_dir / "1" / WARMUP_FILE)))
    assert 1 <= len(records) <= 1000
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.name == MODEL_NAME
    assert request.model_spec.signature_name == "serving_default"
    image_bytes = to_ndarray(request.inputs["image_bytes"])
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(image_bytes))
    assert outputs["probabilities"].shape == (len(image_bytes), 10)


def test_versions_count_up_and_are_never_overwritten(exported, tmp_path):
    base = tmp_path / "versions"
    model = exported.model
    assert keras_alexnet.export(model, base).name == "1"
    assert keras_alexnet.export(exported.checkpoint, base).name == "2"
    with pytest.raises(FileExistsError, match="2 already exists"):
        keras_alexnet.export(model, base, version=2)
    assert sorted(p.name for p in (base / MODEL_NAME).iterdir()) == ["1", "2"]


def test_a_training_runs_model_directory_exports_its_latest_checkpoint(exported, tmp_path):
    model_dir = tmp_path / "run"
    checkpoints.save_checkpoint(build_test_model(seed=4),
                                checkpoints.checkpoint_path(model_dir, 1))
    checkpoints.save_checkpoint(exported.model, checkpoints.checkpoint_path(model_dir, 2))
    version_dir = keras_alexnet.export(model_dir, tmp_path / "out")
    encoded = list(exported.images.values())
    outputs = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
        image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(outputs["probabilities"].numpy(),
                               keras_probabilities(exported.model, DATA_MEAN, encoded),
                               atol=1e-6)


def test_a_model_without_contract_needs_its_data_dir_named(exported, tmp_path):
    legacy = build_test_model()  # as a checkpoint from before contracts loads
    with pytest.raises(ValueError, match="was saved without its input contract"):
        keras_alexnet.export(legacy, tmp_path / "out")
    (tmp_path / "labels.txt").write_text("n00000001\tone\nn00000002\ttwo\n")
    with pytest.raises(ValueError, match="lists 2 classes but model 'alexnet' outputs 10"):
        keras_alexnet.export(legacy, tmp_path / "out", data_dir=tmp_path)
    version_dir = keras_alexnet.export(legacy, tmp_path / "out", data_dir=exported.data_dir)
    outputs = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
        image_bytes=tf.constant(list(exported.images.values())))
    assert outputs["top_k_labels"].shape == (len(exported.images), 5)
    assert [p.name for p in (tmp_path / "out" / MODEL_NAME).iterdir()] == ["1"]
