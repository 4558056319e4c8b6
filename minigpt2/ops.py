"""The equations GPT-2 is made of, one function each, float32 in -> float32 out.

subtle: NumPy 2 promotes float32 arrays to float64 when mixed with NumPy float64 scalars (np.sqrt(64.0),
np.pi); Python floats keep float32. Every constant here is a Python float for that reason.
"""

from __future__ import annotations

import math

import numpy as np


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).

    Computed as x / (1 + exp(-2u)), the same number (0.5 (1 + tanh(u)) = sigmoid(2u)), because exp is about
    twice as fast as tanh in NumPy; in place in one buffer instead of seven temporaries.
    """
    y = x * x  # x^2
    y *= -2.0 * 0.044715 * math.sqrt(2.0 / math.pi)
    y -= 2.0 * math.sqrt(2.0 / math.pi)
    y *= x  # -2u
    np.minimum(y, 80.0, out=y)  # exp(80) still fits in float32; the result is 0 to float precision there
    np.exp(y, out=y)
    y += 1.0
    np.divide(x, y, out=y)  # x / (1 + exp(-2u))
    return y


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along `axis`, shifted by the max so exp never overflows.

    >>> softmax(np.array([1.0, 1.0], dtype=np.float32))
    array([0.5, 0.5], dtype=float32)
    """
    e = x - x.max(axis=axis, keepdims=True)  # the one new array; the rest works in place in it
    np.exp(e, out=e)
    e *= 1.0 / e.sum(axis=axis, keepdims=True)  # multiply by the reciprocal: cheaper than dividing every entry
    return e


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Normalize each row of x [..., C] to mean 0 and variance 1, then scale by g [C] and shift by b [C]."""
    n = x.shape[-1]  # .sum / n: the same as .mean, without its Python-level overhead (this runs 25x per token)
    y = x - x.sum(axis=-1, keepdims=True) / n  # [..., C] centered; the one new [..., C] array, then in place
    var = (y * y).sum(axis=-1, keepdims=True) / n  # [..., 1] (biased variance, as in GPT-2)
    y /= np.sqrt(var + eps)  # [..., C] normalized
    y *= g
    y += b
    return y


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x [..., n_in] @ w.T + b -> [..., n_out], with w stored [n_out, n_in] (GPT-2's "Conv1D", transposed).

    Why [n_out, n_in]: for one token, x @ w.T is a matrix-vector product that reads w row after row, the
    order memory streams fastest (about 15% faster than [n_in, n_out] here); decoding is bound by that read.
    """
    y = x.reshape(-1, x.shape[-1]) @ w.T  # [N, n_in] -> [N, n_out]: batch and time folded into rows, so w is read once
    if b is not None:
        y += b  # in place: no second [N, n_out] array
    return y.reshape(*x.shape[:-1], w.shape[0])
