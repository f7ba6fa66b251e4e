"""The input contract travels with the model: a model trained by `fit` gives the same
predictions through evaluate, predict, the SavedModel and the server, per-pixel mean or
per-channel, with no data directory after training."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import checkpoints
from keras_alexnet.contract import InputContract, decode_predictions, preprocess_input
from keras_alexnet.preprocessing import decode_center_crop
from keras_alexnet.saved_model import classify_files
from serving.client import Client
from serving.server import ModelServer
from tests.keras_alexnet.old_checkpoints import save_in_the_old_format, save_without_contract
from tfrecords_tools.schema import FEATURES, read_labels

SIZE = 64


@pytest.fixture(scope="module", params=["pixel", "channel"])
def trained(request, converted_shards, tmp_path_factory):
    """A model trained with the given mean, and the held-out images with their labels."""
    model_dir = tmp_path_factory.mktemp(f"trained-{request.param}")
    keras_alexnet.fit(converted_shards, model_dir, config=keras_alexnet.reduced_config(),
                      epochs=1, steps_per_epoch=3, batch_size=16, mean=request.param,
                      seed=1, tensorboard=False, verbose=0)
    held_out = []
    for path in sorted(converted_shards.glob("validation-*")):
        for record in tf.data.TFRecordDataset(str(path)):
            features = tf.io.parse_single_example(record, FEATURES)
            held_out.append((features["image/encoded"].numpy(),
                             int(features["image/class/label"])))
    return request.param, model_dir, held_out


def reference(model, contract_mean, encoded, mean_image):
    """The network on centre crops minus the mean computed here with numpy slicing."""
    crops = np.stack([decode_center_crop(tf.constant(b), SIZE, 73).numpy() for b in encoded])
    if contract_mean == "pixel":
        offset = (73 - SIZE) // 2
        crops = crops - mean_image[offset:offset + SIZE, offset:offset + SIZE]
    else:
        crops = crops - mean_image.mean(axis=(0, 1))
    return model.predict(crops, verbose=0)


def test_every_path_preprocesses_by_the_checkpoints_contract(trained, converted_shards,
                                                             tmp_path):
    mean, model_dir, held_out = trained
    model = checkpoints.load_model(model_dir, compile=False)
    contract = model.input_contract
    assert contract.mean == mean and contract.image_size == SIZE
    assert contract.wnids == [w for w, _ in read_labels(converted_shards / "labels.txt")]
    encoded = [image for image, _ in held_out]
    labels = np.array([label for _, label in held_out])

    # The mean the contract holds is the data's, resized as training used it.
    stats_image = np.load(converted_shards / "mean_image.npy") * 255.0
    mean_image = contract.mean_image if mean == "pixel" else stats_image
    if mean == "pixel":
        np.testing.assert_allclose(contract.mean_image, stats_image, atol=1e-3)  # 73 -> 73
    expected = reference(model, mean, encoded, mean_image)
    top1 = expected.argmax(axis=1)
    other = reference(model, "channel" if mean == "pixel" else "pixel", encoded, stats_image)
    assert not np.allclose(other, expected, atol=1e-4)  # the mean mode matters here

    # evaluate: only the shards' images are read from data_dir.
    result = keras_alexnet.evaluate(model_dir, converted_shards, ten_crop=False, verbose=False)
    assert result["center"]["top1_error"] == pytest.approx(np.mean(top1 != labels))

    # predict, from the checkpoint alone.
    files = []
    for i, image in enumerate(encoded):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(image)
    names = contract.names
    by_checkpoint = classify_files(files, checkpoint=model_dir)
    assert [row[0][0] for row in by_checkpoint] == [names[i] for i in top1]

    # The SavedModel, exported from the checkpoint alone, in-process and over gRPC.
    version_dir = keras_alexnet.export(model_dir, tmp_path / "export")
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    outputs = signature(image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    with ModelServer(version_dir.parent, "alexnet", port=0) as server, \
            Client(f"127.0.0.1:{server.port}", "alexnet") as client:
        served = client.classify(encoded)
    assert [row[0][0] for row in served] == [names[i] for i in top1]
    np.testing.assert_allclose([row[0][1] for row in served], expected.max(axis=1), atol=1e-5)


def test_preprocess_input_and_decode_predictions_follow_keras_applications(trained):
    mean, model_dir, held_out = trained
    model = keras_alexnet.build_model(keras_alexnet.reduced_config(), devices=("", ""),
                                      weights=model_dir)
    contract = model.input_contract
    crops = np.stack([decode_center_crop(tf.constant(b), SIZE, 73).numpy()
                      for b, _ in held_out[:4]])
    inputs = preprocess_input(crops, contract)
    assert isinstance(inputs, np.ndarray) and inputs.dtype == np.float32
    window = contract.mean_image[4:68, 4:68] if mean == "pixel" else np.float32(
        contract.mean_rgb)
    np.testing.assert_allclose(inputs, crops - window, atol=1e-4)
    assert isinstance(preprocess_input(tf.constant(crops), contract), tf.Tensor)

    probabilities = model.predict(inputs, verbose=0)
    trained_model = checkpoints.load_model(model_dir, compile=False)
    np.testing.assert_array_equal(probabilities, trained_model.predict(inputs, verbose=0))
    decoded = decode_predictions(probabilities, top=3, contract=contract)
    assert len(decoded) == 4 and all(len(row) == 3 for row in decoded)
    best = probabilities.argmax(axis=1)
    for row, index, scores in zip(decoded, best, probabilities, strict=True):
        wnid, name, score = row[0]
        assert (wnid, name) == contract.classes[index] and score == pytest.approx(scores.max())
        assert [s for _, _, s in row] == sorted((s for _, _, s in row), reverse=True)


def bgr_contract() -> InputContract:
    mean_image = np.random.default_rng(0).uniform(0, 255, (73, 73, 3)).astype(np.float32)
    return InputContract((("n1", "one"), ("n2", "")), 64, 73, "pixel", (1.0, 2.0, 3.0),
                         mean_image, channel_order="BGR")


def assert_same_contract(found: InputContract | None, expected: InputContract) -> None:
    assert found is not None
    for field in dataclasses.fields(InputContract):
        np.testing.assert_array_equal(getattr(found, field.name),
                                      getattr(expected, field.name), err_msg=field.name)


@pytest.fixture
def model_with_contract():
    model = keras_alexnet.build_model(keras_alexnet.reduced_config(num_classes=2),
                                      devices=("", ""), seed=0)
    model.input_contract = bgr_contract()
    return model


def test_the_contract_travels_with_the_model_through_plain_keras(model_with_contract,
                                                                 tmp_path):
    contract = model_with_contract.input_contract
    path = checkpoints.save_checkpoint(model_with_contract, tmp_path / "m.keras")
    model_with_contract.save(tmp_path / "plain.keras")
    loaded = keras.saving.load_model(path)
    for model in (loaded, keras.saving.load_model(tmp_path / "plain.keras"),
                  keras.models.clone_model(model_with_contract), keras.models.clone_model(loaded),
                  checkpoints.load_model(path)):
        assert type(model).__name__ == "AlexNet"
        assert_same_contract(model.input_contract, contract)
    assert_same_contract(checkpoints.read_contract(path), contract)  # without loading


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["keras, keras_alexnet", "keras_alexnet.network, keras"])
def test_importing_keras_alexnet_is_all_plain_keras_needs(model_with_contract, tmp_path,
                                                          imports):
    """`import keras_alexnet` after keras (or keras_alexnet.network in any order)
    registers the classes a checkpoint holds."""
    path = checkpoints.save_checkpoint(model_with_contract, tmp_path / "m.keras")
    script = (f"import sys, {imports}\n"
              "model = keras.saving.load_model(sys.argv[1])\n"
              "print(type(model).__name__, model.input_contract.classes)")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "AlexNet (('n1', 'one'), ('n2', ''))"


def test_checkpoints_written_before_keep_their_contract(model_with_contract, tmp_path):
    contract = model_with_contract.input_contract
    old = save_in_the_old_format(model_with_contract, tmp_path / "old.keras")
    assert keras.saving.load_model(old).input_contract is None  # Keras skips our member
    assert_same_contract(checkpoints.read_contract(old), contract)
    loaded = checkpoints.load_model(old)
    assert_same_contract(loaded.input_contract, contract)
    images = np.random.default_rng(2).normal(0, 50, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  model_with_contract.predict(images, verbose=0))
    # Saved again, it is in the new place: plain Keras finds it.
    again = checkpoints.save_checkpoint(loaded, tmp_path / "again.keras")
    assert_same_contract(keras.saving.load_model(again).input_contract, contract)
    assert checkpoints.read_contract(save_without_contract(
        model_with_contract, tmp_path / "none.keras")) is None


def test_a_contract_round_trips_through_a_checkpoint_and_bgr_reorders(model_with_contract,
                                                                      tmp_path):
    contract = model_with_contract.input_contract
    mean_image = contract.mean_image
    path = checkpoints.save_checkpoint(model_with_contract, tmp_path / "m.keras")
    loaded = checkpoints.read_contract(path)
    assert loaded.classes == contract.classes and loaded.names == ["one", "n2"]
    np.testing.assert_array_equal(loaded.mean_image, mean_image)
    assert loaded.channel_order == "BGR" and loaded.mean == "pixel"
    pixels = np.random.default_rng(1).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocess_input(pixels, loaded),
                               (pixels - mean_image[4:68, 4:68])[..., ::-1], atol=1e-4)
    with pytest.raises(ValueError, match="mean='pixel' needs the mean image"):
        InputContract((("n1", "one"),), 64, 73, "pixel", (1.0, 2.0, 3.0))
