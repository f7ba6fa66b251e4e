"""`keras_alexnet.portable`: each artifact, run by its own runtime, gives the SavedModel's
probabilities on 0-255 RGB crops."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet.contract import InputContract
from keras_alexnet.errors import AlexNetError, MissingPackageError
from keras_alexnet.portable import CONTRACT_FILE, FORMATS, export_portable
from keras_alexnet.preprocessing import decode_center_crop, resize_size_for
from tests.ram_files import fresh_dir
from tests.serving.exported_model import IMAGE_SIZE, build_test_model, make_images

#: The runtime that loads each format, as a user would.
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert"}


def run_artifact(format: str, path, images: np.ndarray) -> np.ndarray:
    """The artifact's probabilities on `images`, from its own runtime's loader."""
    pytest.importorskip(RUNTIMES[format])
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images})[0]
    if format == "openvino":
        import openvino

        # float32 asked for: on a CPU with AVX512_BF16 or AMX, OpenVINO computes in
        # bfloat16 unless told (its CPU plugin's default inference precision there).
        return openvino.Core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32"})({"images": images})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    run = interpreter.get_signature_runner()
    return next(iter(run(images=images).values()))


def saved_model_probabilities(model, base, images: np.ndarray) -> np.ndarray:
    """The reference: the TF SavedModel of the same model, its raw-pixel signature."""
    loaded = tf.saved_model.load(str(keras_alexnet.export(model, base)))
    return loaded.signatures["predict_images"](images=tf.constant(images))[
        "probabilities"].numpy()


def real_crops(size: int) -> np.ndarray:
    """Centre crops of real JPEG and PNG files, as a user cuts them."""
    return np.stack([decode_center_crop(tf.constant(encoded), size).numpy()
                     for encoded in make_images().values()])


def with_contract(model, mean: str = "pixel"):
    """`model` with a contract: a per-pixel mean image read as BGR, as Caffe's weights are
    (the most the graph has to do), or a per-channel mean read as RGB."""
    size = model.input_shape[1]
    classes = tuple((f"n{i:08d}", f"class {i}") for i in range(model.output_shape[-1]))
    resize = resize_size_for(size)
    if mean == "channel":
        model.input_contract = InputContract(classes, size, resize, "channel",
                                             (130.0, 110.0, 95.0))
    else:
        mean_image = np.random.default_rng(4).uniform(60, 190, (resize, resize, 3))
        model.input_contract = InputContract(classes, size, resize, "pixel", (0.0, 0.0, 0.0),
                                             mean_image.astype(np.float32),
                                             channel_order="BGR")
    return model


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The reduced network, real crops and its SavedModel's output on them."""
    model = with_contract(build_test_model())
    crops = real_crops(IMAGE_SIZE)
    expected = saved_model_probabilities(model, tmp_path_factory.mktemp("saved"), crops)
    return model, crops, expected


@pytest.fixture(scope="module")
def paper_network(tmp_path_factory):
    """The paper's network with zero biases and a wider weight spread than its
    N(0, 0.01) [paper §5], so that untrained it still tells the images apart (with the
    paper's biases of 1 its output hardly depends on the input), and its SavedModel's
    output."""
    model = with_contract(keras_alexnet.build_model(devices=("", ""), seed=0, biases_one=(),
                                                    init_stddev=0.03), "channel")
    crops = real_crops(224)
    expected = saved_model_probabilities(model, tmp_path_factory.mktemp("saved"), crops)
    assert len(set(expected.argmax(axis=1))) > 1
    return model, crops, expected


def check_artifact(network, format: str, base) -> None:
    model, crops, expected = network
    path = export_portable(model, base, "alexnet", format=format)
    assert path == base / "alexnet" / "1" / FORMATS[format].file
    # Any batch size: the whole batch, then one image.
    np.testing.assert_allclose(run_artifact(format, path, crops), expected, atol=1e-4)
    np.testing.assert_allclose(run_artifact(format, path, crops[2:3]), expected[2:3],
                               atol=1e-4)
    # The mean and channel order are inside: the bare network on the crops differs.
    assert not np.allclose(run_artifact(format, path, crops),
                           model(crops, training=False).numpy(), atol=1e-4)
    written = InputContract.from_config(json.loads((path.parent / CONTRACT_FILE).read_text()))
    assert written.classes == model.input_contract.classes
    assert written.mean == model.input_contract.mean
    assert written.channel_order == model.input_contract.channel_order


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_artifact_gives_the_saved_models_probabilities(network, format, tmp_path):
    check_artifact(network, format, tmp_path)


# ONNX is left out here: tf2onnx takes a minute and up to 13 GB converting the paper
# network; benchmarks/inference.py checks its paper-network ONNX file against the
# SavedModel (1e-4) before timing it.
@pytest.mark.slow
@pytest.mark.parametrize("format", sorted(set(FORMATS) - {"onnx"}))
def test_the_paper_networks_artifact(paper_network, format, tmp_path):
    check_artifact(paper_network, format, tmp_path)


@pytest.mark.parametrize("format,package", [("onnx", "tf2onnx"), ("openvino", "openvino")])
def test_a_missing_converter_names_the_extra(format, package, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError
    model = build_test_model()
    with pytest.raises(MissingPackageError, match=rf"{package}.*pip install -e \"\.\[{format}\]\""):
        export_portable(model, tmp_path, format=format)
    assert not (tmp_path / "alexnet").exists()


def test_bad_requests_are_refused(tmp_path):
    model = with_contract(build_test_model())
    with pytest.raises(AlexNetError, match="format must be one of"):
        export_portable(model, tmp_path, format="torch")
    with pytest.raises(AlexNetError, match="ensemble"):
        export_portable([model, model], tmp_path, format="onnx")
    (tmp_path / "alexnet" / "3").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="already exists"):
        export_portable(model, tmp_path, version=3, format="litert")


def test_the_export_command_and_export_take_the_format(network, tmp_path):
    from keras_alexnet.commands import main

    model, crops, expected = network
    checkpoint = tmp_path / "model.keras"
    model.save(checkpoint)
    assert main(["export", str(checkpoint), "--export-base", str(tmp_path / "out"),
                 "--format", "openvino"]) == 0
    path = tmp_path / "out" / "alexnet" / "1" / "model.xml"
    np.testing.assert_allclose(run_artifact("openvino", path, crops), expected, atol=1e-4)
    # keras_alexnet.export(format=), to a bucket: the file arrives whole, the contract beside.
    with fresh_dir() as bucket:
        path = keras_alexnet.export(model, bucket, format="litert")
        assert path == bucket / "alexnet" / "1" / "model.tflite"
        local = tmp_path / "model.tflite"
        local.write_bytes(path.read_bytes())
        np.testing.assert_allclose(run_artifact("litert", local, crops), expected, atol=1e-4)
        assert InputContract.from_config(json.loads(
            (path.parent / CONTRACT_FILE).read_text())).classes == model.input_contract.classes
