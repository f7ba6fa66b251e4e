"""SavedModel export for TensorFlow Serving (DESIGN.md §5).

`export` writes `<export_base>/<model_name>/<version>/` with three signatures:

- `serving_default`: `image_bytes` (encoded JPEG or PNG of any size, DT_STRING [-1]) ->
  `probabilities`, `top_k_indices`, `top_k_scores`, `top_k_labels`.  The graph decodes
  and preprocesses exactly as evaluation's centre crop does [paper §2, §4.1].
- `predict_images`: `images` (RGB on the 0-255 scale, already cropped to the model's
  input size, float32 [-1, S, S, 3]) -> the same four outputs; the graph subtracts the
  training mean.
- `features`: `image_bytes` -> `fc7`, the 4096 activations the paper compares images
  by [paper §6.1].

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

from keras_alexnet import checkpoints
from keras_alexnet.model import fc7_features
from keras_alexnet.preprocessing import ImageStats, decode_center_crop, load_stats, subtract_mean
from tfrecords_tools.schema import LABELS, read_labels

TOP_K = 5  # the paper reports top-1 and top-5 error [paper §1, §6]
DEFAULT_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_images"
FEATURES_SIGNATURE = "features"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
_VERSION = re.compile(r"^\d+$")


def load_model(model_or_checkpoint: keras.Model | str | os.PathLike) -> keras.Model:
    """A Keras model, a `.keras` file or a training run's model directory -> the model."""
    if isinstance(model_or_checkpoint, keras.Model):
        return model_or_checkpoint
    return checkpoints.load_model(model_or_checkpoint, compile=False)


def read_class_names(data_dir_or_labels: str | os.PathLike) -> tuple[list[str], ImageStats]:
    """Class names from `labels.txt` and the statistics from `stats.json` beside it.

    Accepts the shard directory or the `labels.txt` path itself.
    """
    path = Path(data_dir_or_labels)
    labels_path = path / LABELS if path.is_dir() else path
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: no labels file; pass the shard directory "
                                f"written by `python -m tfrecords_tools convert` or its labels.txt")
    names = [name or wnid for wnid, name in read_labels(labels_path)]
    return names, load_stats(labels_path.parent)


def serving_functions(model: keras.Model, class_names: Sequence[str],
                      stats: ImageStats) -> dict[str, Callable]:
    """The exported signatures as plain functions of tensors, keyed by signature name.

    Export traces them into the SavedModel; `predict` calls them directly on a checkpoint,
    so both paths run the same preprocessing.
    """
    image_size = model.input_shape[1]
    num_classes = model.output_shape[-1]
    if len(class_names) != num_classes:
        raise ValueError(f"the labels list {len(class_names)} classes but the model outputs "
                         f"{num_classes}")
    features_model = fc7_features(model)
    labels = tf.constant(list(class_names))
    k = min(TOP_K, num_classes)

    def preprocess(image_bytes):
        images = tf.map_fn(lambda encoded: decode_center_crop(encoded, image_size), image_bytes,
                           fn_output_signature=tf.TensorSpec((image_size, image_size, 3),
                                                             tf.float32))
        return subtract_mean(images, stats)

    def run(network, images, width):
        # Convolutions reject an empty batch on CPU; an empty request gets empty outputs.
        return tf.cond(tf.shape(images)[0] > 0, lambda: network(images, training=False),
                       lambda: tf.zeros((0, width), tf.float32))

    def classify(images):
        probabilities = run(model, images, num_classes)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "top_k_indices": indices,
                "top_k_scores": scores, "top_k_labels": tf.gather(labels, indices)}

    def serving_default(image_bytes):
        return classify(preprocess(image_bytes))

    def predict_images(images):
        return classify(subtract_mean(images, stats))

    def features(image_bytes):
        return {"fc7": run(features_model, preprocess(image_bytes),
                           features_model.output_shape[-1])}

    return {DEFAULT_SIGNATURE: serving_default, PIXELS_SIGNATURE: predict_images,
            FEATURES_SIGNATURE: features}


def input_signatures(image_size: int) -> dict[str, list[tf.TensorSpec]]:
    image_bytes = [tf.TensorSpec([None], tf.string, name="image_bytes")]
    return {DEFAULT_SIGNATURE: image_bytes,
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


def export(model_or_checkpoint: keras.Model | str | os.PathLike,
           data_dir_or_labels: str | os.PathLike, export_base: str | os.PathLike,
           model_name: str = "alexnet", version: int | None = None) -> Path:
    """Writes the model as a TF Serving SavedModel and returns its version directory.

    Args:
        model_or_checkpoint: a Keras model, a `.keras` checkpoint or a training run's
            model directory (its latest checkpoint).
        data_dir_or_labels: the shard directory (`labels.txt`, optional `stats.json`) or
            the `labels.txt` path.
        export_base: TF Serving's base path is `<export_base>/<model_name>`.
        model_name: the name clients put in `model_spec.name`.
        version: the integer version directory; default one more than the latest.
    """
    class_names, stats = read_class_names(data_dir_or_labels)
    model = load_model(model_or_checkpoint)
    model_dir = Path(export_base) / model_name
    version = next_version(model_dir) if version is None else int(version)
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    version_dir = model_dir / str(version)
    if version_dir.exists():
        raise FileExistsError(f"{version_dir} already exists; pick another --version")

    image_size = model.input_shape[1]
    archive = keras.export.ExportArchive()
    archive.track(model)
    functions = serving_functions(model, class_names, stats)
    for name, spec in input_signatures(image_size).items():
        archive.add_endpoint(name, functions[name], input_signature=spec)
    # A server polling the base path must never see a half-written version, so the
    # version directory appears in one rename.
    staging = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        archive.write_out(str(staging), verbose=False)
        write_warmup_requests(staging, model_name, image_size)
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

    A checkpoint needs `data_dir` (labels.txt, stats.json); a SavedModel carries both.
    Images run one at a time so that an unreadable one is named in the error.
    """
    if (checkpoint is None) == (saved_model is None):
        raise ValueError("give exactly one of checkpoint and saved_model")
    if saved_model is not None:
        loaded = tf.saved_model.load(str(latest_version_dir(saved_model)))
        classify = loaded.signatures[DEFAULT_SIGNATURE]
    else:
        if data_dir is None:
            raise ValueError("a checkpoint needs data_dir for its class names and statistics")
        class_names, stats = read_class_names(data_dir)
        model = load_model(checkpoint)
        classify = tf.function(serving_functions(model, class_names, stats)[DEFAULT_SIGNATURE],
                               input_signature=input_signatures(model.input_shape[1])[
                                   DEFAULT_SIGNATURE])
    results = []
    for path in paths:
        encoded = Path(path).read_bytes()
        try:
            outputs = classify(image_bytes=tf.constant([encoded]))
        except tf.errors.InvalidArgumentError:
            raise ValueError(f"{path}: not a decodable JPEG or PNG image") from None
        results.extend(top_k_classes(outputs))
    return results
