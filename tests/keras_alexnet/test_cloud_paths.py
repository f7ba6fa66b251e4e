"""A run on cloud storage: the shards, the model directory and the export base at
`tf.io.gfile` URLs (`gs://...` in production; TensorFlow's in-process `ram://` here).
fit stops mid-epoch with a step backup at the URL, a second fit continues from it at the
right step, evaluate reads the URL's shards, export writes under a URL base and the
SavedModel loads back from it; a checkpoint upload cut short leaves the previous one."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import keras_alexnet
from keras_alexnet import checkpoints, resume
from keras_alexnet.commands import main
from keras_alexnet.saved_model import CLASSIFY_METHOD, CLASSIFY_SIGNATURE, classify_files
from tests.keras_alexnet.training_helpers import (
    FIT_ARGS,
    REDUCED,
    class_image,
    jpeg,
    make_dataset,
)
from tests.ram_files import fresh_dir
from tfrecords_tools.base import storage

EPOCHS, STEPS = 2, 4
STOP_AT = STEPS + 2  # step 2 of epoch 2


class StopAt(keras.callbacks.Callback):
    """Stops the run after `STOP_AT` steps, as a callback may (the backup follows)."""

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == STOP_AT:
            self.model.stop_training = True


class CountSteps(keras.callbacks.Callback):
    steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """The shards uploaded to a URL, as `gsutil cp -r` would."""
    with fresh_dir() as url:
        storage.upload_tree(make_dataset(tmp_path_factory.mktemp("cloud") / "data"),
                            url / "data")
        yield url


@pytest.fixture(scope="module")
def stopped(bucket):
    """The model directory after a run stopped mid-epoch: (its URL, its files then)."""
    model_dir = bucket / "run"
    keras_alexnet.fit(str(bucket / "data"), str(model_dir), config=REDUCED, epochs=EPOCHS,
                      steps_per_epoch=STEPS, backup_every=0, callbacks=[StopAt()], **FIT_ARGS)
    listing = {p.name for p in model_dir.iterdir()}, {
        p.name for p in (model_dir / checkpoints.CHECKPOINT_DIR).iterdir()}
    return model_dir, listing, checkpoints.read_metadata(checkpoints.backup_path(model_dir))


@pytest.fixture(scope="module")
def resumed(stopped, bucket):
    """The same run rerun to its end: (model_dir, steps the rerun took, its History)."""
    model_dir = stopped[0]
    counter = CountSteps()
    history = keras_alexnet.fit(str(bucket / "data"), str(model_dir), config=REDUCED,
                                epochs=EPOCHS, steps_per_epoch=STEPS, backup_every=0,
                                callbacks=[counter], **FIT_ARGS)
    return model_dir, counter.steps, history


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_leaves_its_state_at_the_url(stopped):
    _, (top, saved), backup = stopped
    assert top == {"checkpoints", "run.json", "training_log.csv"}
    assert saved == {"epoch-0001.keras", "backup.keras"}  # no temporary left behind
    assert (backup["epoch"], backup["step"], backup["iterations"]) == (1, 2, STOP_AT)


@pytest.mark.slow
def test_the_rerun_continues_from_the_urls_step_backup(resumed):
    model_dir, steps, history = resumed
    assert steps == EPOCHS * STEPS - STOP_AT and history.epoch == [1]
    assert [epoch for epoch, _ in checkpoints.list_checkpoints(str(model_dir))] == [1, 2]
    assert not checkpoints.backup_path(model_dir).exists()  # older than epoch 2's
    latest = checkpoints.latest_checkpoint(str(model_dir))
    assert checkpoints.read_metadata(latest)["iterations"] == EPOCHS * STEPS
    assert [row["epoch"] for row in resume.read_log(str(model_dir))] == ["0", "1"]
    assert json.loads((model_dir / checkpoints.RUN_NAME).read_text())["seed"] == \
        FIT_ARGS["seed"]


@pytest.mark.slow
def test_evaluate_reads_shards_and_writes_results_at_urls(resumed, bucket):
    output = bucket / "evaluation" / "validation.json"
    results = keras_alexnet.evaluate(str(resumed[0]), str(bucket / "data"),
                                     output=str(output), verbose=False)
    assert results["images"] == 64  # the validation split's 4 x 16
    assert json.loads(output.read_text())["ten_crop"] == pytest.approx(results["ten_crop"])


@pytest.mark.slow
def test_export_to_a_url_base_loads_back_and_agrees_with_the_checkpoint(resumed, bucket,
                                                                         tmp_path):
    base = bucket / "models"
    version_dir = keras_alexnet.export(str(resumed[0]), str(base))
    assert str(version_dir) == f"{base}/alexnet/1"
    assert [p.name for p in (base / "alexnet").iterdir()] == ["1"]  # nothing staged there
    loaded = tf.saved_model.load(str(version_dir))
    assert CLASSIFY_SIGNATURE in loaded.signatures
    assert {p.name for p in version_dir.iterdir()} >= {"saved_model.pb", "variables",
                                                      "assets.extra"}
    saved_model = saved_model_pb2.SavedModel.FromString(
        (version_dir / "saved_model.pb").read_bytes())
    assert saved_model.meta_graphs[0].signature_def[CLASSIFY_SIGNATURE].method_name == \
        CLASSIFY_METHOD

    image = tmp_path / "image.jpg"
    image.write_bytes(jpeg(class_image(1, np.random.default_rng(0), 73)))
    exported = classify_files([image], saved_model=str(base / "alexnet"))
    direct = classify_files([image], checkpoint=str(resumed[0]))
    assert [name for name, _ in exported[0]] == [name for name, _ in direct[0]]
    np.testing.assert_allclose([p for _, p in exported[0]], [p for _, p in direct[0]],
                               atol=1e-5)


def test_a_checkpoint_upload_cut_short_leaves_the_previous_checkpoint(monkeypatch):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with fresh_dir() as model_dir:
        path = checkpoints.backup_path(model_dir)
        checkpoints.save_checkpoint(model, path, {"step": 1})

        def upload_half(source, target):
            data = Path(source).read_bytes()
            target.write_bytes(data[:len(data) // 2])
            raise OSError(f"{target}: connection reset")

        monkeypatch.setattr(storage, "upload", upload_half)
        with pytest.raises(OSError, match="connection reset"):
            checkpoints.save_checkpoint(model, path, {"step": 2})
        assert checkpoints.read_metadata(path) == {"step": 1}
        assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_scheme_tensorflow_cannot_open_is_one_line_naming_its_package(capsys):
    assert main(["evaluate", "s3://bucket/run", "s3://bucket/shards"]) != 0
    # The run is read first: which of its checkpoints to evaluate.
    assert capsys.readouterr().err == (
        "error: s3://bucket/run: TensorFlow has no file system for s3:// URLs here; "
        "install tensorflow-io (pip install tensorflow-io), which provides it\n")
