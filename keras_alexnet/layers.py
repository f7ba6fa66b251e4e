"""The two custom layers AlexNet needs: local response normalisation and tower placement."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_alexnet.errors import AlexNetError


@keras.saving.register_keras_serializable(package="keras_alexnet")
class LocalResponseNormalization(keras.layers.Layer):
    """Brightness normalisation across channels [paper §3.3].

    b[x,y,i] = a[x,y,i] / (k + alpha * sum_{j=i-n/2}^{i+n/2} a[x,y,j]^2) ^ beta: `alpha`
    multiplies the plain sum of squares, as in the paper's printed equation and
    `tf.nn.local_response_normalization`.  cuda-convnet (the authors' code) and Caffe
    take a "scale" that they divide by n first; `AlexNetConfig` holds the values of
    each (`lrn_alpha`, `PRINTED_LRN`, `CAFFE_LRN`).  Computed in float32 whatever the
    layer's dtype policy, because bfloat16 LRN has no CPU kernel and float16
    overflows a^2.

    `keep=(start, stop)` returns only those channels of the normalised input: a tower
    reading both towers' maps keeps its own, so the sum crosses the towers' boundary
    as in single-device Caffe (BVLC's weights); the paper normalises each GPU's maps
    on their own.
    """

    def __init__(self, k: float, n: int, alpha: float, beta: float,
                 keep: tuple[int, int] | None = None, **kwargs):
        super().__init__(**kwargs)
        if n < 1 or n % 2 == 0:
            raise AlexNetError(f"LRN size n must be a positive odd number, got {n}")
        self.k, self.n, self.alpha, self.beta = k, n, alpha, beta
        self.keep = tuple(keep) if keep is not None else None

    def call(self, inputs):
        out = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32), depth_radius=self.n // 2, bias=self.k,
            alpha=self.alpha, beta=self.beta)
        if self.keep is not None:
            out = out[..., self.keep[0]:self.keep[1]]
        return tf.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        if self.keep is None:
            return input_shape
        return (*input_shape[:-1], self.keep[1] - self.keep[0])

    def get_config(self):
        return {**super().get_config(), "k": self.k, "n": self.n, "alpha": self.alpha,
                "beta": self.beta, "keep": self.keep}


@keras.saving.register_keras_serializable(package="keras_alexnet")
class TowerLayer(keras.layers.Wrapper):
    """One paper layer of one tower, with its variables and ops on the tower's device.

    The `tf.device` scope is entered in `build()` and `call()`: a scope around the
    construction of a functional model is dropped when Keras traces it (Keras 3 rebuilds
    the graph from the layers' `call`; `tests/keras_alexnet/test_placement.py`).
    A list input is one of the paper's cross-tower connections (conv3, fc6, fc7, fc8
    read both towers [paper §3.2]); it is concatenated here, so the copy from the
    other device happens on this tower's device, as between the paper's two GPUs.
    """

    def __init__(self, layer: keras.layers.Layer, device: str, **kwargs):
        super().__init__(layer, **kwargs)
        self.device = device

    @staticmethod
    def _merged_shape(input_shape):
        if isinstance(input_shape, list) and isinstance(input_shape[0], (list, tuple)):
            channels = sum(shape[-1] for shape in input_shape)
            return (*input_shape[0][:-1], channels)
        return tuple(input_shape)

    def build(self, input_shape=None):
        if not self.layer.built:
            with tf.device(self.device):
                self.layer.build(self._merged_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        with tf.device(self.device):
            if isinstance(inputs, (list, tuple)):
                inputs = tf.concat(inputs, axis=-1)
            return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(self._merged_shape(input_shape))

    def get_config(self):
        return {**super().get_config(), "device": self.device}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deserialising builds the wrapped layer: its variables must land on the device.
        with tf.device(config["device"]):
            return super().from_config(config, custom_objects)
