"""cuda-convnet's layer files as Keras models: the parameter counts the authors' CIFAR-10
networks have, and each layer's arithmetic against numpy written from the rules the
module docstring cites.  The files here are written for the tests, in the files'
dialect."""

from __future__ import annotations

import numpy as np
import pytest

from keras_alexnet.cuda_convnet import (
    ConvNetNorm,
    ConvNetPool,
    CudaConvnetError,
    build_model,
    pool_outputs,
)
from keras_alexnet.layers import LocalResponseNormalization


def conv(name, inputs, filters, channels, init, neuron="relu"):
    return (f"[{name}]\ntype=conv\ninputs={inputs}\nchannels={channels}\nfilters={filters}\n"
            f"padding=2\nstride=1\nfilterSize=5\ninitW={init}\npartialSum=4\n"
            f"sharedBiases=1\n" + (f"neuron={neuron}\n" if neuron else ""))


def pool(name, inputs, kind, channels, neuron=""):
    return (f"[{name}]\ntype=pool\npool={kind}\ninputs={inputs}\nstart=0\nsizeX=3\n"
            f"stride=2\noutputsX=0\nchannels={channels}\n"
            + (f"neuron={neuron}\n" if neuron else ""))


DATA = "[data]\ntype=data\ndataIdx=0\n\n[labels]\ntype=data\ndataIdx=1\n"
SOFTMAX = "[probs]\ntype=softmax\ninputs=fc10\n\n[logprob]\ntype=cost.logreg\ninputs=labels,probs\n"

#: Shaped as the authors' "26% error in 80 seconds" network.
SMALL = "\n".join([
    "# a comment, as the authors' files open", DATA,
    conv("conv1", "data", 32, 3, 0.0001, neuron=""), pool("pool1", "conv1", "max", 32, "relu"),
    conv("conv2", "pool1", 32, 32, 0.01), pool("pool2", "conv2", "avg", 32),
    conv("conv3", "pool2", 64, 32, 0.01), pool("pool3", "conv3", "avg", 64),
    "[fc64]\ntype=fc\noutputs=64\ninputs=pool3\ninitW=0.1\nneuron=relu\n",
    "[fc10]\ntype=fc\noutputs=10\ninputs=fc64\ninitW=0.1\n", SOFTMAX])

#: Shaped as the authors' "18% error" network: response normalisation, one fc.
NORMALISED = "\n".join([
    DATA, conv("conv1", "data", 32, 3, 0.0001, neuron=""),
    pool("pool1", "conv1", "max", 32, "relu"),
    "[rnorm1]\ntype=rnorm\ninputs=pool1\nchannels=32\nsize=3\n",
    conv("conv2", "rnorm1", 32, 32, 0.01), pool("pool2", "conv2", "avg", 32),
    "[rnorm2]\ntype=rnorm\ninputs=pool2\nchannels=32\nsize=3\n",
    conv("conv3", "rnorm2", 64, 32, 0.01), pool("pool3", "conv3", "avg", 64),
    "[fc10]\ntype=fc\noutputs=10\ninputs=pool3\ninitW=0.01\n", SOFTMAX])

NORM_PARAMS = "".join(f"[{name}]\nscale=0.00005\npow=.75\n\n" for name in ("rnorm1", "rnorm2"))


def files(tmp_path, layers, params=""):
    (tmp_path / "layers.cfg").write_text(layers)
    (tmp_path / "params.cfg").write_text(params or "[conv1]\nepsW=0.001\n")
    return tmp_path / "layers.cfg", tmp_path / "params.cfg"


@pytest.mark.parametrize("layers, params, count", [
    (SMALL, "", 145_578), (NORMALISED, NORM_PARAMS, 89_578)])
def test_the_authors_cifar_networks_have_their_parameter_counts(tmp_path, layers, params,
                                                                count):
    model = build_model(*files(tmp_path, layers, params), (32, 32, 3))
    assert model.count_params() == count
    # 32 -> 16 -> 8 -> 4 by cuda-convnet's rounding up (Keras's floor gives 15 at pool1).
    assert model.get_layer("pool3").output.shape[1:] == (4, 4, 64)
    probabilities = model.predict(np.random.default_rng(0).normal(size=(2, 32, 32, 3)),
                                  verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def numpy_pool(x, size, stride, mode):
    side = x.shape[0]
    count = pool_outputs(side, 0, size, stride)
    out = np.zeros((count, count, x.shape[2]))
    for i in range(count):
        for j in range(count):
            window = x[i * stride:min(i * stride + size, side),
                       j * stride:min(j * stride + size, side)]  # what lies inside
            out[i, j] = window.max(axis=(0, 1)) if mode == "max" else window.mean(axis=(0, 1))
    return out


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("side", [7, 8])
def test_pooling_counts_and_divides_as_cuda_convnet(mode, side):
    x = np.random.default_rng(side).normal(size=(side, side, 2)).astype(np.float32)
    outputs = pool_outputs(side, 0, 3, 2)
    assert outputs == {7: 3, 8: 4}[side]  # 8: one more than Keras's floor
    got = ConvNetPool(mode, 3, 2, outputs)(x[None]).numpy()[0]
    np.testing.assert_allclose(got, numpy_pool(x, 3, 2, mode), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("across_maps", [False, True])
def test_response_normalisation_as_cuda_convnet(across_maps):
    x = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    size, scale, power = 3, 0.5, 0.75
    expected = np.zeros_like(x)
    for i, j, f in np.ndindex(*x.shape):
        if across_maps:  # maps f - 1 .. f + 1, clipped
            total = np.sum(x[i, j, max(f - 1, 0):f + 2] ** 2)
            denominator = 1 + scale / size * total
        else:  # the 3x3 window around (i, j), clipped at the edge
            total = np.sum(x[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, f] ** 2)
            denominator = 1 + scale / size ** 2 * total
        expected[i, j, f] = x[i, j, f] * denominator ** -power
    # cmrnorm: the package's LRN, as build_model makes it.
    layer = (LocalResponseNormalization(1.0, size, scale / size, power) if across_maps
             else ConvNetNorm(size, scale, power))
    got = layer(x[None]).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, message", [
    (("type=pool\npool=max", "type=local\npool=max"), "[pool1] type: 'local' is not a layer "
                                                       "type this builds"),
    (("sizeX=3", "sizeX=3\ngroups=2"), "[pool1] groups: not a key this builds for type pool"),
    (("outputs=64", "outputs=sixty"), "[fc64] outputs: expected int, got 'sixty'"),
    (("inputs=pool3", "inputs=pool9"), "[fc64] inputs: no layer named 'pool9'"),
    (("neuron=relu\n\n[fc10]", "neuron=tanh\n\n[fc10]"), "[fc64] neuron: 'tanh': only relu"),
    (("channels=32\nfilters=32\npadding=2", "channels=16\nfilters=32\npadding=2"),
     "[conv2] channels: 16, but its input has 32"),
])
def test_what_it_cannot_build_is_one_line_naming_the_section_and_key(tmp_path, change,
                                                                      message):
    layers, params = files(tmp_path, SMALL.replace(*change, 1))
    with pytest.raises(CudaConvnetError) as raised:
        build_model(layers, params, (32, 32, 3))
    assert str(raised.value).startswith(f"{layers}: {message}")


def test_normalisation_needs_its_parameters(tmp_path):
    layers, params = files(tmp_path, NORMALISED)
    with pytest.raises(CudaConvnetError, match=r"\[rnorm1\] needs its section in the "
                                               r"parameter file \(scale, pow\)"):
        build_model(layers, params, (32, 32, 3))
