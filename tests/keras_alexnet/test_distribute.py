"""Scale-out: strategy selection, and two MultiWorkerMirroredStrategy workers on localhost."""

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_alexnet import checkpoints, data
from keras_alexnet.distribute import cluster_size, is_chief, select_strategy
from tests.keras_alexnet.training_helpers import make_dataset, write_split

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(workers, index, kind="worker"):
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": kind, "index": index}})


@pytest.mark.slow
def test_two_workers_end_with_identical_weights_that_moved(tmp_path):
    dataset = make_dataset(tmp_path / "data", train_per_class=16, validation_per_class=4)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "tests.keras_alexnet.training_worker", str(dataset),
         str(tmp_path / "model"), str(tmp_path / f"weights-{index}.npz"), "--epochs", "1",
         "--steps-per-epoch", "3", "--strategy", "multi-worker"],
        cwd=ROOT, env={**os.environ, "TF_CONFIG": tf_config(workers, index)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for index in range(2)]
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    first, second = (np.load(tmp_path / f"weights-{index}.npz") for index in range(2))
    count = len(first.files) // 2
    moved = 0
    for i in range(count):
        np.testing.assert_array_equal(first[f"final_{i}"], second[f"final_{i}"])
        moved += not np.allclose(first[f"final_{i}"], first[f"start_{i}"])
    assert moved >= count - 4  # all but a few untouched biases changed
    # Each worker reads its own shard (two shards, two workers: see the next test), so
    # only the all-reduced gradients keep them in step.  Only the chief wrote.
    assert [e for e, _ in checkpoints.list_checkpoints(tmp_path / "model")] == [1]
    saved = checkpoints.load_model(tmp_path / "model")
    for i, weight in enumerate(saved.get_weights()):
        np.testing.assert_array_equal(weight, first[f"final_{i}"])


def test_strategy_selection(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_size() == 1
    assert select_strategy("auto") is tf.distribute.get_strategy()  # towers on this CPU
    with pytest.raises(ValueError, match="strategy 'multi-worker' needs TF_CONFIG"):
        select_strategy("multi-worker")
    with pytest.raises(ValueError, match="strategy must be one of"):
        select_strategy("parameter-server")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        cluster_size()
    monkeypatch.setenv("TF_CONFIG", tf_config(["a:1", "b:2", "c:3"], 1))
    assert cluster_size() == 3


@pytest.mark.parametrize("cluster, task, index, chief", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
])
def test_only_the_chief_writes(cluster, task, index, chief):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task, task_id=index)
    assert is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief
    assert is_chief(tf.distribute.get_strategy())


def test_each_input_pipeline_reads_its_own_shards(tmp_path):
    # Shard 0 holds the label-0 images, shard 1 the label-1 images.
    write_split(tmp_path, "train", [0, 1] * 8, size=73, num_shards=2)
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline)
        dataset = data.training_dataset(tmp_path, 64, 4, num_classes=2, seed=0,
                                        input_context=context)
        labels = np.concatenate([y.numpy() for _, y in dataset.take(4)])
        assert set(labels) == {pipeline}


def test_fit_runs_under_a_mirrored_strategy(tmp_path):
    import keras_alexnet
    from tests.keras_alexnet.training_helpers import FIT_ARGS, REDUCED

    dataset = make_dataset(tmp_path / "data", train_per_class=8, validation_per_class=2)
    history = keras_alexnet.fit(dataset, tmp_path / "model", config=REDUCED, epochs=1,
                                steps_per_epoch=2, strategy="mirrored", **FIT_ARGS)
    assert isinstance(history.model.distribute_strategy, tf.distribute.MirroredStrategy)
    assert np.isfinite(history.history["loss"][0])
    assert int(checkpoints.load_model(tmp_path / "model").optimizer.iterations.numpy()) == 2
