"""The server serves any SavedModel under <base>/<version>/, not only AlexNet's export."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving import errors
from serving.client import Client
from serving.server import ModelServer


class Affine(tf.Module):
    """Two inputs of different dtypes, outputs of different ranks."""

    def __init__(self):
        super().__init__()
        self.scale = tf.Variable([1.0, 2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int64, name="offset")])
    def apply(self, x, offset):
        shifted = x * self.scale + tf.cast(offset, tf.float32)[:, None]
        return {"y": shifted, "total": tf.reduce_sum(shifted, axis=1)}


@pytest.fixture(scope="module")
def generic_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("generic")
    module = Affine()
    tf.saved_model.save(module, str(base / "7"), signatures={"serving_default": module.apply})
    with ModelServer(base, "affine", port=0, enable_batching=True,
                     file_system_poll_wait_seconds=0) as server:
        yield server


def test_any_signature_is_served_with_batching(generic_server):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with Client(generic_server.address, "affine") as client:
        prediction = client.predict({"x": x, "offset": np.array([10, 20], np.int64)})
        assert prediction.version == 7
        np.testing.assert_allclose(prediction.outputs["y"], x * [1, 2, 3] + [[10], [20]])
        np.testing.assert_allclose(prediction.outputs["total"], [38.0, 86.0])
        assert set(client.metadata()["serving_default"].inputs) == {"x", "offset"}
        with pytest.raises(errors.InvalidArgumentError) as raised:
            client.predict({"x": x})
        assert raised.value.message == (
            "input size does not match signature: 1!=2 len({x}) != len({offset,x}). "
            "Sent extra: {}. Missing but required: {offset}.")
        with pytest.raises(errors.InvalidArgumentError) as raised:
            client.predict({"x": x, "offset": np.array([1], np.int64)})
        assert raised.value.message == \
            "Batching Run() input tensors must have equal 0th-dimension size"
        with pytest.raises(errors.InvalidArgumentError) as raised:
            client.predict({"x": x, "offset": np.array([1.0, 2.0])})
        assert raised.value.message == "Expects arg[0] to be int64 but double is provided"
