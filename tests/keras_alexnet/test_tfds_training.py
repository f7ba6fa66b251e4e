"""A dataset that TensorFlow Datasets prepared feeds `fit`, `evaluate` and `export` as the
converter's shards do: its labels and class names are TFDS's (the reference is
tensorflow_datasets itself), and a run on it resumes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import data
from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED, class_image, jpeg
from tests.tfds_builders import imagenet_like, prepare_with_tfds
from tfrecords_tools.dataset import DatasetInfo

tfds = pytest.importorskip("tensorflow_datasets")

#: Four classes named as imagenet2012 names them (WNIDs), in an order of TFDS's choosing.
NAMES = ("n01491361", "n01440764", "n01484850", "n01443537")
TRAIN_PER_CLASS, VALIDATION_PER_CLASS = 16, 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """`imagenet2012`'s features, 73x73 learnable images, written by TFDS."""
    rng = np.random.default_rng(0)

    def examples(split, per_class):
        return [{"image": jpeg(class_image(label, rng, 73)), "label": label,
                 "file_name": f"{split}_{label}_{i}.JPEG"}
                for label in range(len(NAMES)) for i in range(per_class)]

    return prepare_with_tfds(tmp_path_factory.mktemp("tfds"), imagenet_like(NAMES),
                             {"train": examples("train", TRAIN_PER_CLASS),
                              "validation": examples("validation", VALIDATION_PER_CLASS)})


def tfds_labels(directory, split) -> list[int]:
    builder = tfds.builder_from_directory(str(directory))
    return [int(e["label"]) for e in builder.as_dataset(split=split, shuffle_files=False)
            .as_numpy_iterator()]


def test_evaluation_batches_carry_tfds_labels_in_its_order(prepared):
    dataset = data.evaluation_dataset(prepared, 64, 5, num_classes=len(NAMES), crops="center")
    labels = [int(label) for _, batch in dataset for label in batch]
    assert labels == tfds_labels(prepared, "validation")


def test_training_batches_hold_every_tfds_label_once_an_epoch(prepared):
    batches = TRAIN_PER_CLASS * len(NAMES) // 8
    stream = data.training_dataset(prepared, 64, 8, num_classes=len(NAMES), seed=3)
    labels = [int(label) for _, batch in stream.take(batches) for label in batch]
    assert sorted(labels) == sorted(tfds_labels(prepared, "train"))


@pytest.mark.slow
def test_a_tfds_dataset_trains_resumes_evaluates_and_exports(prepared, tmp_path, capsys):
    model_dir = tmp_path / "model"
    history = keras_alexnet.fit(prepared, model_dir, config=REDUCED, epochs=1,
                                steps_per_epoch=1, **FIT_ARGS)
    contract = history.model.input_contract
    assert [wnid for wnid, _ in contract.classes] == list(NAMES)
    model = keras_alexnet.fit(prepared, model_dir, config=REDUCED, epochs=2,
                              steps_per_epoch=1, **FIT_ARGS).model
    assert "at epoch 2, step 1 of 1" in capsys.readouterr().out

    results = keras_alexnet.evaluate(model, prepared, ten_crop=False, verbose=False)
    counts = np.bincount(tfds_labels(prepared, "validation"), minlength=len(NAMES))
    assert [(c["wnid"], c["images"]) for c in results["per_class"]] == list(
        zip(NAMES, counts.tolist(), strict=True))

    version_dir = keras_alexnet.export(model, tmp_path / "export")
    loaded = tf.saved_model.load(str(version_dir))
    image = next(iter(DatasetInfo(prepared).shards("validation")))
    record = next(iter(tf.data.TFRecordDataset(str(image))))
    encoded = tf.io.parse_single_example(record, DatasetInfo(prepared).keys.spec("image"))
    outputs = loaded.signatures["serving_default"](
        image_bytes=tf.reshape(encoded["image"], [1]))
    labels = [label.decode() for label in outputs["top_k_labels"].numpy()[0]]
    assert sorted(labels[:len(NAMES)]) == sorted(NAMES)


def test_the_pictures_read_tfds_labels_and_file_names(prepared):
    from keras_alexnet.contract import contract_of
    from keras_alexnet.figures.examples import iterate_examples
    from keras_alexnet.model import build_network

    contract = contract_of(build_network(REDUCED), prepared)
    batches = list(iterate_examples(prepared, "validation", contract, batch_size=5))
    builder = tfds.builder_from_directory(str(prepared))
    reference = list(builder.as_dataset(split="validation", shuffle_files=False)
                     .as_numpy_iterator())
    assert [int(label) for batch in batches for label in batch.labels] == [
        int(e["label"]) for e in reference]
    assert [name for batch in batches for name in batch.filenames] == [
        e["file_name"].decode() for e in reference]
