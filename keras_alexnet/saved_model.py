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

An ensemble (`export([run1, run2, ...])`, `keras_alexnet.ensemble`) is one SavedModel
with the same signatures and warmup requests: `probabilities` is the mean of the
members' softmax [paper §6], each member preprocessing the same bytes by its own
contract in the graph; `features` concatenates the members' fc7 (member order), and
`predict_images` is there only when the members share an input size.

The weights are stored once (`variables/` holds 4 bytes a parameter; Keras's
ExportArchive stores them twice, keras-team/keras#23553).
The export base may be a `tf.io.gfile` URL (`gs://bucket/models`, `tfrecords_tools.base.storage`).
`assets.extra/tf_serving_warmup_requests` holds a `PredictionLog` TFRecord that TF
Serving replays at load, so the first real request does not pay for tracing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_alexnet import versions
from keras_alexnet.ensemble import Member, ModelSource, load_members
from keras_alexnet.errors import AlexNetError
from keras_alexnet.model import fc7_features
from keras_alexnet.preprocessing import decode_center_crop
from serving import DEFAULT_MODEL_NAME
from serving.servables import list_versions
from tfrecords_tools.base import storage

TOP_K = 5  # the paper reports top-1 and top-5 error [paper §1, §6]
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD = "tensorflow/serving/classify"  # TF Serving's kClassifyMethodName
PIXELS_SIGNATURE = "predict_images"
FEATURES_SIGNATURE = "features"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def _center_crops(image_bytes: tf.Tensor, image_size: int, resize_size: int) -> tf.Tensor:
    return tf.map_fn(
        lambda encoded: decode_center_crop(encoded, image_size, resize_size), image_bytes,
        fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.float32))


def _network_input(member: Member, images: tf.Tensor) -> tf.Tensor:
    return member.contract.to_network(member.contract.subtract_mean(images))


def _run(network: keras.Model, images: tf.Tensor, width: int) -> tf.Tensor:
    # Convolutions reject an empty batch on CPU; an empty request gets empty outputs.
    return tf.cond(tf.shape(images)[0] > 0, lambda: network(images, training=False),
                   lambda: tf.zeros((0, width), tf.float32))


def serving_functions(members: Sequence[Member]) -> dict[str, Callable]:
    """The exported signatures as plain functions of tensors, keyed by signature name.

    `members` (`ensemble.load_members`): one model, or an ensemble whose probabilities
    are the mean of its members' [paper §6], each member fed by its own contract from
    the same image bytes.  `predict_images` takes crops of one size, so it is there only
    when every member has the same input size.  `features` gives the members' fc7
    activations side by side, in member order: the squared Euclidean distance the paper
    compares images by [paper §6.1] is then the sum of the members' distances.

    Export traces them into the SavedModel; `predict` calls them directly on a checkpoint,
    so both paths run the same preprocessing.
    """
    contract = members[0].contract  # the ensemble's classes are in the first member's order
    num_classes = len(contract.classes)
    features_models = [fc7_features(member.model) for member in members]
    labels = tf.constant(contract.names)
    k = min(TOP_K, num_classes)

    def preprocess(image_bytes):
        # One decode and crop per input geometry; each member then takes its own mean.
        crops = {}
        for member in members:
            geometry = (member.contract.image_size, member.contract.resize_size)
            if geometry not in crops:
                crops[geometry] = _center_crops(image_bytes, *geometry)
        return [_network_input(member, crops[member.contract.image_size,
                                             member.contract.resize_size])
                for member in members]

    def top_k(inputs):
        probabilities = tf.add_n([
            tf.gather(_run(member.model, images, num_classes), member.order, axis=1)
            for member, images in zip(members, inputs, strict=True)]) / len(members)
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
        return top_k([_network_input(member, images) for member in members])

    def features(image_bytes):
        return {"fc7": tf.concat([
            _run(network, images, network.output_shape[-1])
            for network, images in zip(features_models, preprocess(image_bytes),
                                       strict=True)], axis=1)}

    functions = {DEFAULT_SIGNATURE: serving_default, CLASSIFY_SIGNATURE: classify,
                 PIXELS_SIGNATURE: predict_images, FEATURES_SIGNATURE: features}
    if len({member.contract.image_size for member in members}) > 1:
        del functions[PIXELS_SIGNATURE]
    return functions


def input_signatures(image_size: int) -> dict[str, list[tf.TensorSpec]]:
    image_bytes = [tf.TensorSpec([None], tf.string, name="image_bytes")]
    return {DEFAULT_SIGNATURE: image_bytes,
            CLASSIFY_SIGNATURE: [tf.TensorSpec([None], tf.string, name="inputs")],
            PIXELS_SIGNATURE: [tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                             name="images")],
            FEATURES_SIGNATURE: image_bytes}


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

    def __init__(self, members: Sequence[Member]):
        super().__init__(name="alexnet")
        # The backend variables themselves: tracked here and captured by the functions,
        # they are written once (once per member of an ensemble).
        self.model_variables = [variable.value for member in members
                                for variable in member.model.variables]
        specs = input_signatures(members[0].contract.image_size)
        self.functions = {name: tf.function(function, input_signature=specs[name])
                          for name, function in serving_functions(members).items()}


def _write(servable: _Servable, directory: Path, model_name: str, image_size: int) -> None:
    """The SavedModel, its Classify method name and its warmup requests in `directory`."""
    tf.saved_model.save(servable, str(directory), signatures=servable.functions)
    _mark_classify_method(directory)
    write_warmup_requests(directory, model_name, image_size)


def _mark_classify_method(version_dir: Path) -> None:
    """Gives the `classify` signature TF Serving's Classify method name (`tf.saved_model`
    writes every signature as a Predict one)."""
    path = version_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[CLASSIFY_SIGNATURE].method_name = CLASSIFY_METHOD
    path.write_bytes(saved_model.SerializeToString())


def export(model_or_checkpoint: ModelSource | Sequence[ModelSource],
           export_base: str | os.PathLike, model_name: str = DEFAULT_MODEL_NAME,
           version: int | None = None, *, data_dir: str | os.PathLike | None = None,
           format: str = "tf_saved_model") -> storage.PathOrUrl:
    """Writes the model as a TF Serving SavedModel and returns its version directory.

    Args:
        model_or_checkpoint: a Keras model with an input contract (as `fit` and
            `checkpoints.load_model` give), a `.keras` checkpoint or a training run's
            model directory (its latest checkpoint); or a list of them: an ensemble,
            one SavedModel whose signatures average the members' probabilities in the
            graph [paper §6] (`serving_functions`), each member's weights stored once.
        export_base: TF Serving's base path is `<export_base>/<model_name>`; a local
            path or a `tf.io.gfile` URL.
        model_name: the name clients put in `model_spec.name`.
        version: the integer version directory; default one more than the latest.
        data_dir: only for a checkpoint saved before input contracts were recorded:
            the shard directory it was trained on (classes, per-channel mean).
        format: "tf_saved_model" (this SavedModel), or "onnx", "openvino", "litert":
            the network on 0-255 RGB crops for that runtime (`keras_alexnet.portable`);
            then the artifact's path is returned.
    """
    if format != "tf_saved_model":
        from keras_alexnet.portable import export_portable

        return export_portable(model_or_checkpoint, export_base, model_name, version,
                               format=format, data_dir=data_dir)
    members = load_members(model_or_checkpoint, data_dir)
    version_dir = versions.new_version_dir(export_base, model_name, version)
    servable = _Servable(members)
    image_size = members[0].contract.image_size
    versions.write_version(
        version_dir, lambda directory: _write(servable, directory, model_name, image_size),
        last=("saved_model.pb",))
    return version_dir


def latest_version_dir(path: str | os.PathLike) -> storage.PathOrUrl:
    """A version directory as given, or the latest integer version under a model directory."""
    path = storage.path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such SavedModel directory")
    found = list_versions(path)
    if not found:
        raise FileNotFoundError(f"{path}: no saved_model.pb and no integer version directory")
    return path / str(found[-1])


def top_k_classes(outputs: dict[str, tf.Tensor | np.ndarray]) -> list[list[tuple[str, float]]]:
    """`top_k_labels` and `top_k_scores` -> per image [(class name, probability), ...]."""
    labels = np.asarray(outputs["top_k_labels"])
    scores = np.asarray(outputs["top_k_scores"])
    return [[(label.decode() if isinstance(label, bytes) else str(label), float(score))
             for label, score in zip(row_labels, row_scores, strict=True)]
            for row_labels, row_scores in zip(labels, scores, strict=True)]


def classify_files(paths: Sequence[str | os.PathLike], *,
                   checkpoint: ModelSource | Sequence[ModelSource] | None = None,
                   saved_model: str | os.PathLike | None = None,
                   data_dir: str | os.PathLike | None = None) -> list[list[tuple[str, float]]]:
    """Top-5 (class name, probability) per image file, from a checkpoint (or a list of
    them: their ensemble, as `export` writes it) or a SavedModel.

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
        members = load_members(checkpoint, data_dir)
        classify = tf.function(serving_functions(members)[DEFAULT_SIGNATURE],
                               input_signature=input_signatures(
                                   members[0].contract.image_size)[DEFAULT_SIGNATURE])
    results = []
    for path in paths:
        encoded = storage.path(path).read_bytes()
        try:
            outputs = classify(image_bytes=tf.constant([encoded]))
        except tf.errors.InvalidArgumentError as error:
            refused = re.search(r"assertion failed: \[(.*?)\]", error.message)
            reason = refused.group(1) if refused else "not a decodable JPEG or PNG image"
            raise AlexNetError(f"{path}: {reason}") from error
        results.extend(top_k_classes(outputs))
    return results
