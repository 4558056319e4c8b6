"""The equations, against their textbook forms in float64."""

import math

import numpy as np

from minigpt2.ops import gelu, layer_norm, linear, softmax


def test_gelu_is_gpt2s_tanh_approximation():
    x = np.linspace(-60, 60, 100_001).astype(np.float32)
    x64 = x.astype(np.float64)
    textbook = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    y = gelu(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, textbook, atol=1e-6, rtol=1e-6)
    assert gelu(np.float32([0.0]))[0] == 0.0


def test_softmax_by_hand_and_stable():
    np.testing.assert_allclose(softmax(np.float32([0.0, math.log(3.0)])), [0.25, 0.75], rtol=1e-6)
    big = softmax(np.float32([1000.0, 1000.0, -np.inf]))  # no overflow, masked entries get 0
    np.testing.assert_allclose(big, [0.5, 0.5, 0.0])


def test_layer_norm_by_hand():
    x = np.float32([[1.0, 2.0, 3.0, 6.0]])
    g, b = np.float32([1, 2, 1, 1]), np.float32([0, 0, 1, 0])
    mean, var = 3.0, (4 + 1 + 0 + 9) / 4  # biased variance
    expected = (np.float64([1, 2, 3, 6]) - mean) / math.sqrt(var + 1e-5) * [1, 2, 1, 1] + [0, 0, 1, 0]
    np.testing.assert_allclose(layer_norm(x, g, b)[0], expected, rtol=1e-6)
    assert layer_norm(x, g, b).dtype == np.float32


def test_linear_folds_leading_axes_and_keeps_weights_out_by_in():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4), dtype=np.float32), rng.standard_normal((5, 4), dtype=np.float32), np.float32([1, 2, 3, 4, 5])
    y = linear(x, w, b)
    assert y.shape == (2, 3, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y, np.einsum("btc,oc->bto", x, w) + b, rtol=1e-5)
    np.testing.assert_allclose(linear(x, w), np.einsum("btc,oc->bto", x, w), rtol=1e-5)




def test_log_softmax_is_the_log_of_softmax_and_stays_finite():
    from minigpt2.ops import log_softmax, softmax

    x = np.random.default_rng(0).standard_normal((4, 7)) * 30
    np.testing.assert_allclose(log_softmax(x), np.log(softmax(x)), atol=1e-12)
    np.testing.assert_allclose(np.exp(log_softmax(x)).sum(-1), 1, atol=1e-12)
    assert np.isfinite(log_softmax(np.array([[1e4, 0.0, -1e4]]))).all(), "no overflow, no -inf"
