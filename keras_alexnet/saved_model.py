"""SavedModel export for TensorFlow Serving.

`export` writes `<export_base>/<model_name>/<version>/` with four signatures, all
preprocessing by the model's input contract (`keras_alexnet.contract`):

- `serving_default`: `image_bytes` (encoded JPEG or PNG of any size, DT_STRING [-1]) ->
  `probabilities`, `top_k_indices`, `top_k_scores`, `top_k_labels`.  The graph decodes
  (bounded: `preprocessing.decode_bounded`) and preprocesses exactly as evaluation's
  centre crop does [paper §2, §4.1].
- `classify` (method `tensorflow/serving/classify`, for TF Serving's Classify RPC and
  REST `:classify`): `inputs`, serialized `tf.Example`s with `image/encoded` ->
  `classes` (the top-5 class names) and `scores`.
- `predict_images`: `images` (RGB on the 0-255 scale, already cropped to the model's
  input size, float32 [-1, S, S, 3]) -> the same four outputs as `serving_default`.
- `features`: `image_bytes` -> `fc7`, the 4096 activations the paper compares images
  by [paper §6.1].

The weights are stored once (`variables/` holds 4 bytes a parameter; Keras's
ExportArchive stores them twice, keras-team/keras#23553).
`assets.extra/tf_serving_warmup_requests` holds a `PredictionLog` TFRecord that TF
Serving replays at load, so the first real request does not pay for tracing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_alexnet import checkpoints
from keras_alexnet.contract import InputContract, contract_of
from keras_alexnet.errors import AlexNetError
from keras_alexnet.model import fc7_features
from keras_alexnet.preprocessing import decode_center_crop
from serving import DEFAULT_MODEL_NAME

TOP_K = 5  # the paper reports top-1 and top-5 error [paper §1, §6]
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD = "tensorflow/serving/classify"  # TF Serving's kClassifyMethodName
PIXELS_SIGNATURE = "predict_images"
FEATURES_SIGNATURE = "features"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
_VERSION = re.compile(r"^\d+$")


def load_model(model_or_checkpoint: keras.Model | str | os.PathLike) -> keras.Model:
    """A Keras model, a `.keras` file or a training run's model directory -> the model."""
    if isinstance(model_or_checkpoint, keras.Model):
        return model_or_checkpoint
    return checkpoints.load_model(model_or_checkpoint, compile=False)


def serving_functions(model: keras.Model, contract: InputContract) -> dict[str, Callable]:
    """The exported signatures as plain functions of tensors, keyed by signature name.

    Export traces them into the SavedModel; `predict` calls them directly on a checkpoint,
    so both paths run the same preprocessing.
    """
    image_size = model.input_shape[1]
    num_classes = model.output_shape[-1]
    if len(contract.classes) != num_classes:
        raise AlexNetError(f"the input contract lists {len(contract.classes)} classes but the "
                           f"model outputs {num_classes}")
    if contract.image_size != image_size:
        raise AlexNetError(f"the input contract is for {contract.image_size}x"
                           f"{contract.image_size} inputs but the model takes {image_size}")
    features_model = fc7_features(model)
    labels = tf.constant(contract.names)
    k = min(TOP_K, num_classes)

    def network_input(images):
        return contract.to_network(contract.subtract_mean(images))

    def preprocess(image_bytes):
        images = tf.map_fn(
            lambda encoded: decode_center_crop(encoded, image_size, contract.resize_size),
            image_bytes, fn_output_signature=tf.TensorSpec((image_size, image_size, 3),
                                                           tf.float32))
        return network_input(images)

    def run(network, images, width):
        # Convolutions reject an empty batch on CPU; an empty request gets empty outputs.
        return tf.cond(tf.shape(images)[0] > 0, lambda: network(images, training=False),
                       lambda: tf.zeros((0, width), tf.float32))

    def top_k(images):
        probabilities = run(model, images, num_classes)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "top_k_indices": indices,
                "top_k_scores": scores, "top_k_labels": tf.gather(labels, indices)}

    def serving_default(image_bytes):
        return top_k(preprocess(image_bytes))

    def classify(inputs):
        examples = tf.io.parse_example(
            inputs, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        outputs = top_k(preprocess(examples["image/encoded"]))
        return {"classes": outputs["top_k_labels"], "scores": outputs["top_k_scores"]}

    def predict_images(images):
        return top_k(network_input(images))

    def features(image_bytes):
        return {"fc7": run(features_model, preprocess(image_bytes),
                           features_model.output_shape[-1])}

    return {DEFAULT_SIGNATURE: serving_default, CLASSIFY_SIGNATURE: classify,
            PIXELS_SIGNATURE: predict_images, FEATURES_SIGNATURE: features}


def input_signatures(image_size: int) -> dict[str, list[tf.TensorSpec]]:
    image_bytes = [tf.TensorSpec([None], tf.string, name="image_bytes")]
    return {DEFAULT_SIGNATURE: image_bytes,
            CLASSIFY_SIGNATURE: [tf.TensorSpec([None], tf.string, name="inputs")],
            PIXELS_SIGNATURE: [tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                             name="images")],
            FEATURES_SIGNATURE: image_bytes}


def next_version(model_dir: Path) -> int:
    """One more than the largest integer version directory (TF Serving skips other names)."""
    versions = [int(p.name) for p in model_dir.iterdir() if _VERSION.match(p.name)] \
        if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def _warmup_image(image_size: int) -> bytes:
    gray = tf.fill((image_size, image_size, 3), tf.constant(128, tf.uint8))
    return tf.io.encode_jpeg(gray).numpy()


def write_warmup_requests(version_dir: Path, model_name: str, image_size: int) -> Path:
    """One single-image `serving_default` request, the shape most clients send."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=DEFAULT_SIGNATURE))
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([_warmup_image(image_size)], dtype=tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    return path


class _Servable(tf.Module):
    """What the SavedModel holds: each variable once, and the signature functions."""

    def __init__(self, model: keras.Model, functions: dict[str, Callable]):
        super().__init__(name="alexnet")
        # The backend variables themselves: tracked here and captured by the functions,
        # they are written once.
        self.model_variables = [variable.value for variable in model.variables]
        image_size = model.input_shape[1]
        self.functions = {
            name: tf.function(functions[name], input_signature=spec)
            for name, spec in input_signatures(image_size).items()}


def _mark_classify_method(version_dir: Path) -> None:
    """Gives the `classify` signature TF Serving's Classify method name (`tf.saved_model`
    writes every signature as a Predict one)."""
    path = version_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[CLASSIFY_SIGNATURE].method_name = CLASSIFY_METHOD
    path.write_bytes(saved_model.SerializeToString())


def export(model_or_checkpoint: keras.Model | str | os.PathLike,
           export_base: str | os.PathLike, model_name: str = DEFAULT_MODEL_NAME,
           version: int | None = None, *, data_dir: str | os.PathLike | None = None) -> Path:
    """Writes the model as a TF Serving SavedModel and returns its version directory.

    Args:
        model_or_checkpoint: a Keras model with an input contract (as `fit` and
            `checkpoints.load_model` give), a `.keras` checkpoint or a training run's
            model directory (its latest checkpoint).
        export_base: TF Serving's base path is `<export_base>/<model_name>`.
        model_name: the name clients put in `model_spec.name`.
        version: the integer version directory; default one more than the latest.
        data_dir: only for a checkpoint saved before input contracts were recorded:
            the shard directory it was trained on (classes, per-channel mean).
    """
    model = load_model(model_or_checkpoint)
    contract = contract_of(model, data_dir, source=model_or_checkpoint)
    model_dir = Path(export_base) / model_name
    version = next_version(model_dir) if version is None else int(version)
    if version < 0:
        raise AlexNetError(f"version must be a non-negative integer, got {version}")
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise FileExistsError(f"{version_dir} already exists; pick another --version")

    servable = _Servable(model, serving_functions(model, contract))
    # A server polling the base path must never see a half-written version, so the
    # version directory appears in one rename.
    staging = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tf.saved_model.save(servable, str(staging), signatures=servable.functions)
        _mark_classify_method(staging)
        write_warmup_requests(staging, model_name, model.input_shape[1])
        staging.rename(version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version_dir


def latest_version_dir(path: str | os.PathLike) -> Path:
    """A version directory as given, or the latest integer version under a model directory."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such SavedModel directory")
    versions = sorted(int(p.name) for p in path.iterdir()
                       if _VERSION.match(p.name) and (p / "saved_model.pb").is_file())
    if not versions:
        raise FileNotFoundError(f"{path}: no saved_model.pb and no integer version directory")
    return path / str(versions[-1])


def top_k_classes(outputs: dict[str, tf.Tensor | np.ndarray]) -> list[list[tuple[str, float]]]:
    """`top_k_labels` and `top_k_scores` -> per image [(class name, probability), ...]."""
    labels = np.asarray(outputs["top_k_labels"])
    scores = np.asarray(outputs["top_k_scores"])
    return [[(label.decode() if isinstance(label, bytes) else str(label), float(score))
             for label, score in zip(row_labels, row_scores, strict=True)]
            for row_labels, row_scores in zip(labels, scores, strict=True)]


def classify_files(paths: Sequence[str | os.PathLike], *,
                   checkpoint: keras.Model | str | os.PathLike | None = None,
                   saved_model: str | os.PathLike | None = None,
                   data_dir: str | os.PathLike | None = None) -> list[list[tuple[str, float]]]:
    """Top-5 (class name, probability) per image file, from a checkpoint or a SavedModel.

    Both carry their input contract; `data_dir` is only for a checkpoint saved before
    contracts were recorded.  Images run one at a time so that an unreadable one is
    named in the error.
    """
    if (checkpoint is None) == (saved_model is None):
        raise AlexNetError("give exactly one of checkpoint and saved_model")
    if saved_model is not None:
        loaded = tf.saved_model.load(str(latest_version_dir(saved_model)))
        classify = loaded.signatures[DEFAULT_SIGNATURE]
    else:
        model = load_model(checkpoint)
        contract = contract_of(model, data_dir, source=checkpoint)
        classify = tf.function(serving_functions(model, contract)[DEFAULT_SIGNATURE],
                               input_signature=input_signatures(model.input_shape[1])[
                                   DEFAULT_SIGNATURE])
    results = []
    for path in paths:
        encoded = Path(path).read_bytes()
        try:
            outputs = classify(image_bytes=tf.constant([encoded]))
        except tf.errors.InvalidArgumentError as error:
            refused = re.search(r"assertion failed: \[(.*?)\]", error.message)
            reason = refused.group(1) if refused else "not a decodable JPEG or PNG image"
            raise AlexNetError(f"{path}: {reason}") from error
        results.extend(top_k_classes(outputs))
    return results
