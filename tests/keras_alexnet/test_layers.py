"""Local response normalisation against the formula of [paper §3.3]."""

import keras
import numpy as np
import pytest

from keras_alexnet.layers import LocalResponseNormalization


def paper_lrn(a, k=2.0, n=5, alpha=1e-4, beta=0.75):
    """b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * (a[..., lo:hi + 1] ** 2).sum(-1)) ** beta
    return b


@pytest.mark.parametrize("params", [{}, {"k": 1.0, "n": 3, "alpha": 1e-3, "beta": 0.5}])
def test_lrn_matches_paper_formula(params):
    # Large activations, so that the normalisation really divides (ReLU outputs of conv1
    # reach the hundreds on 0-255 inputs).
    a = np.random.default_rng(0).uniform(0, 300, (2, 5, 5, 13)).astype("float32")
    out = LocalResponseNormalization(**params)(a)
    np.testing.assert_allclose(np.asarray(out), paper_lrn(a, **params), rtol=1e-5)
    assert not np.allclose(np.asarray(out), a / params.get("k", 2.0) ** 0.75, rtol=1e-3)


def test_lrn_computes_in_float32_under_mixed_precision():
    a = np.random.default_rng(1).uniform(0, 300, (1, 3, 3, 8)).astype("float32")
    layer = LocalResponseNormalization(dtype="mixed_bfloat16")
    out = layer(keras.ops.cast(a, "bfloat16"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    bf16_input = np.asarray(keras.ops.cast(keras.ops.cast(a, "bfloat16"), "float32"))
    np.testing.assert_allclose(np.asarray(keras.ops.cast(out, "float32")),
                               paper_lrn(bf16_input), rtol=1e-2)


def test_lrn_serialises():
    layer = LocalResponseNormalization(k=1.5, n=7, name="lrn1")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.k, clone.n, clone.alpha, clone.beta, clone.name) == (1.5, 7, 1e-4, 0.75, "lrn1")


def test_lrn_rejects_even_size():
    with pytest.raises(ValueError, match="n must be a positive odd number"):
        LocalResponseNormalization(n=4)
