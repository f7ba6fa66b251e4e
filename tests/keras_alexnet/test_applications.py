"""`keras_alexnet.build_model` as Keras applications take it: `include_top=False` with
`pooling`, and `classes=N` over pretrained weights (a new fc8), each carrying the
weights' input contract."""

from __future__ import annotations

import hashlib
import shutil

import keras
import numpy as np
import pytest

import keras_alexnet
from keras_alexnet import checkpoints, finetune, pretrained
from keras_alexnet.contract import InputContract
from keras_alexnet.model import layers_of
from keras_alexnet.pretrained import ENVIRONMENT_VARIABLE, Published
from tests.serving.exported_model import write_data_dir

#: 128x128 inputs: pool5 is 3x3, so that average and maximum pooling differ.
CONFIG = keras_alexnet.reduced_config(num_classes=4, image_size=128)
CPU = ("/CPU:0", "/CPU:0")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded 4-class checkpoint with its contract (a per-channel mean of its own)."""
    root = tmp_path_factory.mktemp("weights")
    model = keras_alexnet.build_model(CONFIG, devices=CPU, seed=5)
    contract = InputContract.from_data(write_data_dir(root / "data"), CONFIG.image_size)
    model.input_contract = InputContract(contract.classes[:4], contract.image_size,
                                         contract.resize_size, contract.mean,
                                         contract.mean_rgb)
    return checkpoints.save_checkpoint(model, root / "model.keras")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(0, 60, (3, 128, 128, 3)).astype(np.float32)


def tower_pool5(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The reference: both towers' pool5 outputs of the whole network, concatenated."""
    towers = keras.Model(model.input, [model.get_layer(f"{tower}_pool5").output
                                        for tower in finetune.TOWERS])
    return np.concatenate([np.asarray(t) for t in towers(images, training=False)], axis=-1)


@pytest.mark.parametrize("pooling,reduce", [(None, None), ("avg", np.mean),
                                            ("max", np.max)])
def test_without_top_the_weights_pool5_pooled_and_the_contract(checkpoint, images, pooling,
                                                                reduce):
    whole = checkpoints.load_model(checkpoint, compile=False)
    body = keras_alexnet.build_model(weights=checkpoint, include_top=False, pooling=pooling,
                                     devices=CPU)
    maps = tower_pool5(whole, images)
    assert maps.shape == (3, 3, 3, 2 * CONFIG.tower_filters()[-1])
    expected = maps if reduce is None else reduce(maps, axis=(1, 2))
    assert body.output_shape == (None, *expected.shape[1:])
    np.testing.assert_allclose(body.predict(images, verbose=0), expected, rtol=1e-5,
                               atol=1e-5)
    assert not any(name in {layer.name for layer in body.layers}
                   for name in ("tower_a_fc6", "tower_a_fc8", "probabilities"))
    assert body.input_contract.to_config() == whole.input_contract.to_config()


def test_without_top_the_contract_survives_save_load_and_clone(checkpoint, images,
                                                               tmp_path):
    body = keras_alexnet.build_model(weights=checkpoint, include_top=False, pooling="avg",
                                     devices=CPU)
    body.save(tmp_path / "body.keras")
    loaded = keras.saving.load_model(tmp_path / "body.keras")
    assert isinstance(loaded, type(body))
    assert loaded.input_contract.to_config() == body.input_contract.to_config()
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               body.predict(images, verbose=0), rtol=1e-6)
    assert keras.models.clone_model(body).input_contract.names == body.input_contract.names
    assert checkpoints.load_model(tmp_path / "body.keras").input_contract.names == \
        body.input_contract.names
    assert checkpoints.read_contract(tmp_path / "body.keras").names == body.input_contract.names
    with pytest.raises(ValueError, match=r"has no fc7 \(built with include_top=False, "
                                         r"it ends at pool5\)"):
        keras_alexnet.fc7_features(loaded)


def test_new_classes_over_the_weights_get_a_new_fc8(checkpoint, images):
    whole = checkpoints.load_model(checkpoint, compile=False)
    model = keras_alexnet.build_model(weights=checkpoint, classes=7, devices=CPU, seed=1,
                                      name="seven")
    assert model.output_shape == (None, 7)
    assert model.name == "seven"
    for name in layers_of(whole):
        for tower in finetune.TOWERS:
            layer = f"{tower}_{name}"
            same = all(np.array_equal(a, b) for a, b in zip(
                model.get_layer(layer).get_weights(), whole.get_layer(layer).get_weights(),
                strict=True))
            assert same == (name != "fc8"), layer
    contract = model.input_contract
    assert contract.names == [f"class {i}" for i in range(7)]
    assert contract.mean_rgb == whole.input_contract.mean_rgb
    # Same body, other head: fc7 features are the weights' own.
    np.testing.assert_allclose(keras_alexnet.fc7_features(model)(images, training=False),
                               keras_alexnet.fc7_features(whole)(images, training=False),
                               rtol=1e-5, atol=1e-5)

    # The weights' own count keeps fc8 and the class names.
    same = keras_alexnet.build_model(weights=checkpoint, classes=4, devices=CPU)
    np.testing.assert_allclose(same.predict(images, verbose=0),
                               whole.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    assert same.input_contract.names == whole.input_contract.names


def test_without_weights_as_keras_applications(images):
    body = keras_alexnet.build_model(CONFIG, include_top=False, devices=CPU)
    assert body.output_shape == (None, 3, 3, 2 * CONFIG.tower_filters()[-1])
    assert body.input_contract is None
    assert keras_alexnet.build_model(CONFIG, classes=6, devices=CPU).output_shape == (None, 6)


@pytest.mark.parametrize("kwargs,message", [
    ({"pooling": "avg"}, "pooling='avg' needs include_top=False"),
    ({"include_top": False, "pooling": "sum"}, "pooling must be None, 'avg' or 'max', got "
                                               "'sum'"),
    ({"include_top": False, "classes": 3}, "classes=3 needs include_top=True"),
    ({"classes": 3, "num_classes": 5}, "classes=3 and num_classes=5 differ"),
])
def test_refusals_are_one_line(kwargs, message):
    with pytest.raises(keras_alexnet.errors.AlexNetError, match=message) as refused:
        keras_alexnet.build_model(CONFIG, devices=CPU, **kwargs)
    assert "\n" not in str(refused.value)


def test_new_classes_keep_the_weights_network(checkpoint):
    with pytest.raises(ValueError, match=r"classes=3\) keeps the network of the weights; "
                                         r"it cannot also set dropout"):
        keras_alexnet.build_model(weights=checkpoint, classes=3, dropout=0.1)
    with pytest.raises(ValueError, match="the checkpoint has input size 128 but the config "
                                         "gives 64"):
        keras_alexnet.build_model(keras_alexnet.reduced_config(), weights=checkpoint,
                                  classes=3)


def test_weights_by_name(checkpoint, images, tmp_path, monkeypatch):
    # A cached import is what a name resolves to once downloaded (`pretrained`).
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setitem(pretrained.PUBLISHED, "tiny", Published(
        "http://127.0.0.1:9/tiny.caffemodel", hashlib.sha1(b"unused").hexdigest()))
    (tmp_path / "models").mkdir()
    shutil.copyfile(checkpoint, tmp_path / "models" / "tiny.keras")

    body = keras_alexnet.build_model(CONFIG, weights="tiny", include_top=False,
                                     pooling="max", devices=CPU)
    whole = checkpoints.load_model(checkpoint, compile=False)
    np.testing.assert_allclose(body.predict(images, verbose=0),
                               tower_pool5(whole, images).max(axis=(1, 2)), rtol=1e-5,
                               atol=1e-5)
    assert keras_alexnet.build_model(weights="tiny", classes=2).output_shape == (None, 2)
