"""Activations a = f(z) and their backward passes dZ = dA * f'(z).

Each forward sits next to its backward. A backward takes the upstream gradient ``dA``
first and the forward's *output* ``a`` (not z): every derivative here can be written
from it, so the forward pass caches only activations.

    identity  f(z) = z                      f'(z) = 1
    sigmoid   f(z) = 1 / (1 + e^-z)         f'(z) = a (1 - a)
    tanh      f(z) = tanh z                 f'(z) = 1 - a^2
    relu      f(z) = max(0, z)              f'(z) = 1 if z > 0 else 0   (0 at z = 0, seed 002;
                                                    z > 0 exactly when a > 0)
    softmax   f(z)_j = e^z_j / sum_k e^z_k  dZ = a * (dA - sum_j dA_j a_j)   (row-wise Jacobian)

Sigmoid and softmax are written so that no exponential overflows: finite and
warning-free for any finite z, in float32 and float64. Functions return new arrays and
never modify their inputs; inside, they update their own temporaries in place (standard
in-place operators), which saves an allocation and a pass per step.
"""

from __future__ import annotations

import math

from backends.errors import ConfigError

__all__ = ["ACTIVATIONS", "backward", "forward", "get_activation"]


def identity(z, /, *, xp):
    """f(z) = z."""
    return z


def backprop_identity(dA, a, /, *, xp):
    """dZ = dA."""
    return dA


def sigmoid_floor(dtype, /, *, xp) -> float:
    """1 - log(dtype max): the z at and above which e^-z cannot overflow."""
    return 1.0 - math.log(float(xp.finfo(dtype).max))


def sigmoid(z, /, *, xp):
    """sigma(z) = 1 / (1 + e^-z), with z clamped below at :func:`sigmoid_floor` so that
    e^-z cannot overflow. The clamp moves only values smaller than ~1e-38 (float32) or
    ~1e-308 (float64), and costs one cheap pass where a two-branch form would cost three."""
    t = xp.maximum(z, sigmoid_floor(z.dtype, xp=xp))
    t *= -1.0
    e = xp.exp(t)
    e += 1.0
    return 1.0 / e  # not e **= -1: NumPy's in-place power took 2.5-7x as long as this


def backprop_sigmoid(dA, a, /, *, xp):
    """dZ = dA * sigma'(z) with sigma'(z) = sigma(z) (1 - sigma(z)) = a (1 - a)."""
    g = 1.0 - a
    g *= a
    g *= dA
    return g


def tanh(z, /, *, xp):
    """f(z) = tanh z."""
    return xp.tanh(z)


def backprop_tanh(dA, a, /, *, xp):
    """dZ = dA * (1 - a^2)."""
    g = a * a
    g *= -1.0
    g += 1.0
    g *= dA
    return g


def relu(z, /, *, xp):
    """f(z) = max(0, z)."""
    return xp.maximum(z, 0.0)


def backprop_relu(dA, a, /, *, xp):
    """dZ = dA where z > 0 (equivalently a > 0), else 0; the derivative at z = 0 is 0."""
    return xp.where(a > 0, dA, 0.0)


def softmax(z, /, *, xp):
    """softmax(z)_j = e^(z_j - m) / sum_k e^(z_k - m) over the last axis, m = max_k z_k.

    Subtracting the row maximum leaves the value unchanged and keeps every exponent <= 0."""
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    e /= xp.sum(e, axis=-1, keepdims=True)
    return e


def backprop_softmax(dA, a, /, *, xp):
    """dZ_j = sum_i dA_i da_i/dz_j = a_j (dA_j - sum_i dA_i a_i)  (Jacobian diag(a) - a a^T)."""
    return a * (dA - xp.sum(dA * a, axis=-1, keepdims=True))


ACTIVATIONS = {
    "identity": (identity, backprop_identity),
    "sigmoid": (sigmoid, backprop_sigmoid),
    "tanh": (tanh, backprop_tanh),
    "relu": (relu, backprop_relu),
    "softmax": (softmax, backprop_softmax),
}


def get_activation(name: str):
    """``(forward, backward)`` of the activation called ``name``; ConfigError lists the names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; use one of: {', '.join(ACTIVATIONS)}",
            setting="activation",
        ) from None


def forward(name: str, z, /, *, xp):
    """Apply the activation called ``name``."""
    return get_activation(name)[0](z, xp=xp)


def backward(name: str, dA, a, /, *, xp):
    """Backward pass of the activation called ``name``: dZ from dA and the output a."""
    return get_activation(name)[1](dA, a, xp=xp)
