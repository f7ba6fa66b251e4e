"""Local response normalisation against numpy formulas: the paper's printed equation
[paper §3.3] and the authors' code's form of it (cuda-convnet divides the scale by the
window size), the latter being the paper configuration's."""

import keras
import numpy as np
import pytest

from keras_alexnet import build_model, reduced_config
from keras_alexnet.config import PRINTED_LRN
from keras_alexnet.layers import LocalResponseNormalization

PAPER = {"k": 2.0, "n": 5, "alpha": 1e-4, "beta": 0.75}  # [paper §3.3]


def printed_lrn(a, k, n, alpha, beta):
    """b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * (a[..., lo:hi + 1] ** 2).sum(-1)) ** beta
    return b


def cuda_convnet_lrn(a, scale=1e-4, size=5, min_div=2.0, power=0.75):
    """cuda-convnet's cross-map response normalisation with cuda-convnet2's ImageNet
    parameters (scale=0.0001, pow=0.75, minDiv=2, size 5): its layer parser divides
    `scale` by `size` before the kernel computes b = a / (minDiv + scale * sum a^2)^pow."""
    return printed_lrn(a, min_div, size, scale / size, power)


def activations(seed=0, shape=(2, 5, 5, 13)):
    # Large activations, so that the normalisation really divides (ReLU outputs of conv1
    # reach the hundreds on 0-255 inputs).
    return np.random.default_rng(seed).uniform(0, 300, shape).astype("float32")


@pytest.mark.parametrize("params", [PAPER, {"k": 1.0, "n": 3, "alpha": 1e-3, "beta": 0.5}])
def test_lrn_matches_the_formula(params):
    a = activations()
    out = LocalResponseNormalization(**params)(a)
    np.testing.assert_allclose(np.asarray(out), printed_lrn(a, **params), rtol=1e-5)
    assert not np.allclose(np.asarray(out), a / params["k"] ** 0.75, rtol=1e-3)


def lrn_of(config, layer="tower_a_lrn1"):
    return build_model(config, devices=("/CPU:0", "/CPU:0")).get_layer(layer).layer


def test_the_paper_configuration_normalises_as_the_authors_code():
    a = activations(1, (2, 4, 4, 6))  # reduced conv1: 6 maps a tower
    out = np.asarray(lrn_of(reduced_config())(a))
    np.testing.assert_allclose(out, cuda_convnet_lrn(a), rtol=1e-5)
    # ...which is not the printed equation, 5x stronger.
    assert np.abs(out - printed_lrn(a, **PAPER)).max() > 0.01 * np.abs(out).max()


def test_the_printed_equation_is_an_option():
    a = activations(2, (2, 4, 4, 16))  # reduced conv2: 16 maps a tower
    out = np.asarray(lrn_of(reduced_config(**PRINTED_LRN), "tower_b_lrn2")(a))
    np.testing.assert_allclose(out, printed_lrn(a, **PAPER), rtol=1e-5)


def test_lrn_computes_in_float32_under_mixed_precision():
    a = activations(1, (1, 3, 3, 8))
    layer = LocalResponseNormalization(**PAPER, dtype="mixed_bfloat16")
    out = layer(keras.ops.cast(a, "bfloat16"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    bf16_input = np.asarray(keras.ops.cast(keras.ops.cast(a, "bfloat16"), "float32"))
    np.testing.assert_allclose(np.asarray(keras.ops.cast(out, "float32")),
                               printed_lrn(bf16_input, **PAPER), rtol=1e-2)


def test_lrn_serialises():
    layer = LocalResponseNormalization(1.5, 7, 3e-5, 0.5, name="lrn1")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.k, clone.n, clone.alpha, clone.beta, clone.name) == (1.5, 7, 3e-5, 0.5, "lrn1")


def test_lrn_rejects_even_size():
    with pytest.raises(ValueError, match="n must be a positive odd number"):
        LocalResponseNormalization(**{**PAPER, "n": 4})
