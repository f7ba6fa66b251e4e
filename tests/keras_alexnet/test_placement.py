"""Each tower's forward ops, gradient ops and variables sit on its own device.

TensorFlow fixes the logical devices when it starts, so the check runs in a fresh
interpreter that splits the CPU in two
(`python -m tests.keras_alexnet.test_placement` prints its report).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEVICES = ("/CPU:0", "/CPU:1")
# Reads of captured variables: placed with their resource at run time, which the
# variable-device check covers; they carry no device of their own in the graph.
RESOURCE_OPS = {"ReadVariableOp", "Placeholder"}


def _probe() -> dict:
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from keras_alexnet import PaperSGD, build_model, reduced_config

    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (8, 64, 64, 3)).astype("float32")
    labels = rng.integers(0, 10, 8)
    config = reduced_config(dropout=0.0)

    def train(devices, weights=None):
        model = build_model(config, devices=devices)
        if weights is not None:
            model.set_weights(weights)
        model.compile(PaperSGD(), "sparse_categorical_crossentropy")
        losses = [float(model.train_on_batch(images, labels)) for _ in range(3)]
        return model, losses

    # Same start, one device: the split must not change the arithmetic.
    start = build_model(config, devices=DEVICES)
    split, split_losses = train(DEVICES, start.get_weights())
    _, single_losses = train(("/CPU:0", "/CPU:0"), start.get_weights())

    graph = tf.function(split.train_step).get_concrete_function(
        (tf.constant(images), tf.constant(labels))).graph
    ops = [{"name": op.name, "type": op.type, "device": op.device}
           for op in graph.get_operations() if op.type not in RESOURCE_OPS]
    variables = [{"path": v.path, "device": v.value.device}
                 for v in split.weights + split.optimizer.variables]
    keras.backend.clear_session()
    return {"ops": ops, "variables": variables, "split_losses": split_losses,
            "single_losses": single_losses}


@pytest.fixture(scope="module")
def report() -> dict:
    result = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_towers_forward_backward_and_variables_on_their_devices(report):
    for tower, device in zip(("tower_a", "tower_b"), DEVICES, strict=True):
        suffix = device.replace("/", "/device:")
        forward = [op for op in report["ops"]
                   if f"/{tower}_" in op["name"] and not op["name"].startswith("gradients")]
        backward = [op for op in report["ops"]
                    if op["name"].startswith("gradients") and f"/{tower}_" in op["name"]]
        assert len(forward) > 50 and len(backward) > 50
        assert {"Conv2D", "LRN", "MaxPool", "MatMul"} <= {op["type"] for op in forward}
        assert {"Conv2DBackpropFilter", "Conv2DBackpropInput", "LRNGrad", "MaxPoolGrad"} \
            <= {op["type"] for op in backward}
        misplaced = [op for op in forward + backward if not op["device"].endswith(suffix)]
        assert not misplaced, misplaced[:5]
        own = [v for v in report["variables"] if tower in v["path"]]
        # kernel + bias of conv1..conv5, fc6..fc8, and a momentum slot for each
        assert len(own) == 2 * 8 * 2
        assert all(v["device"].endswith(suffix.replace("/device:", "device:")) for v in own), own


def test_split_training_gives_the_same_loss_as_one_device(report):
    split, single = report["split_losses"], report["single_losses"]
    assert abs(split[0] - split[-1]) > 1e-3  # the steps changed the model
    for a, b in zip(split, single, strict=True):
        assert abs(a - b) <= 1e-5 * abs(b)


if __name__ == "__main__":
    print(json.dumps(_probe()))
