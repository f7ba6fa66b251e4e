"""ImageNet's full releases' class counts end to end: 10,184 (Fall 2009, the paper's §6
rows) and 21,841 (Fall 2011): fc8's size and the labels through training, top-1/top-5
evaluation, the export and the server's classify."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet.saved_model import latest_version_dir
from serving.client import Client
from serving.server import ModelServer
from tests.fakes import write_fake_stats
from tests.keras_alexnet.training_helpers import PALETTE, class_image, jpeg
from tfrecords_tools.schema import ImageRecord, serialize, shard_name


def write_shards(data_dir, num_classes: int, labels: dict[str, list[int]]) -> None:
    """labels.txt of `num_classes` classes; each split's images of the given labels (the
    images tell apart only label mod 6: the point is the count, not learning)."""
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, split_labels in labels.items():
        with tf.io.TFRecordWriter(str(data_dir / shard_name(split, 0, 1))) as writer:
            for number, label in enumerate(split_labels):
                writer.write(serialize(ImageRecord(
                    jpeg(class_image(label % len(PALETTE), rng, 73)), 73, 73,
                    f"{split}_{number}.JPEG", label, f"n{label:08d}", f"class {label}")))
    (data_dir / "labels.txt").write_text(
        "".join(f"n{label:08d}\tclass {label}\n" for label in range(num_classes)))
    write_fake_stats(data_dir)


@pytest.mark.slow
@pytest.mark.parametrize("num_classes", [10_184, 21_841])
def test_trains_evaluates_exports_and_serves_every_class(num_classes, tmp_path):
    rng = np.random.default_rng(1)
    last = num_classes - 1
    labels = {"train": [*rng.integers(0, num_classes, 14).tolist(), 0, last],
              "validation": [0, 1, last - 1, last, *rng.integers(0, num_classes, 4).tolist()]}
    data = tmp_path / "data"
    write_shards(data, num_classes, labels)
    run = tmp_path / "run"
    config = keras_alexnet.reduced_config(num_classes=num_classes)
    keras_alexnet.fit(data, run, config=config, epochs=1, steps_per_epoch=2, batch_size=8,
                      seed=3, tensorboard=False, verbose=0)
    model = keras_alexnet.load_model(run)
    assert model.output_shape == (None, num_classes)  # fc8, both towers' halves
    assert len(model.input_contract.classes) == num_classes

    result = keras_alexnet.evaluate(run, data, verbose=False)
    assert result["images"] == len(labels["validation"])
    for crops in ("center", "ten_crop"):
        assert 0 <= result[crops]["top5_error"] <= result[crops]["top1_error"] <= 1

    export = tmp_path / "export"
    version = keras_alexnet.export(run, export)
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    image = jpeg(class_image(last % len(PALETTE), rng, 73))
    local = signature(image_bytes=tf.constant([image]))
    assert local["probabilities"].shape == (1, num_classes)
    expected = [label.decode() for label in local["top_k_labels"].numpy()[0]]
    with ModelServer(export / "alexnet", port=0) as server, \
            Client(server.address, timeout=120) as client:
        (top5,) = client.classify([image])
    assert [name for name, _ in top5] == expected
    assert all(name.startswith("class ") and int(name[6:]) < num_classes for name in expected)
    assert latest_version_dir(export / "alexnet") == version
