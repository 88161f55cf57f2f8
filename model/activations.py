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
warning-free for any finite z, in float32 and float64.

Every function returns a new array and leaves its inputs alone, unless it is given
``out``: then (on NumPy and CuPy, whose functions take ``out=``; see
:func:`model.variants.writes_in_place`) it computes the same formula into ``out``, which
may be its own input, and returns it. That is the in-place variant of the training step;
the portable code is the reference it is tested against, and the two agree bit for bit.
A forward's ``bias`` is added to z first, f(z + bias): a Dense layer's bias, which the
variant adds in the same pass where it can (sigmoid's -(z + bias)).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

from backends.errors import ConfigError
from model.variants import kept_ones, ones

__all__ = ["ACTIVATIONS", "ActivationFn", "backward", "forward", "get_activation"]


def _plus(z, bias, out, xp):
    """z + bias: a new array, or written into ``out`` (the in-place variant); z itself
    when there is no bias."""
    if bias is None:
        return z
    return z + bias if out is None else xp.add(z, bias, out=out)


def identity(z, /, *, xp, out=None, bias=None):
    """f(z) = z."""
    return _plus(z, bias, out, xp)


def backprop_identity(dA, a, /, *, xp, out=None):
    """dZ = dA."""
    return dA


@functools.lru_cache(maxsize=64)
def limits(dtype, xp) -> tuple[float, float]:
    """(largest finite value, smallest normal value) of a floating ``dtype`` (asked of the
    namespace once per dtype: ``finfo`` costs microseconds, a step's every call)."""
    info = xp.finfo(dtype)
    return float(info.max), float(info.smallest_normal)


def sigmoid_floor(dtype, /, *, xp) -> float:
    """1 - log(dtype max): the z at and above which e^-z cannot overflow."""
    return _floor(dtype, xp)


@functools.lru_cache(maxsize=64)
def _floor(dtype, xp) -> float:
    return 1.0 - math.log(limits(dtype, xp)[0])


def sigmoid(z, /, *, xp, out=None, bias=None):
    """sigma(z) = 1 / (1 + e^-z), with z clamped below at :func:`sigmoid_floor` so that
    e^-z cannot overflow. The clamp moves only values smaller than ~1e-38 (float32) or
    ~1e-308 (float64), and costs one cheap pass where a two-branch form would cost three."""
    low = _floor(z.dtype, xp)  # sigmoid_floor's value, one cached call a step
    if out is None:
        t = xp.maximum(_plus(z, bias, None, xp), low)
        t *= -1.0
        e = xp.exp(t)
        e += 1.0
        return 1.0 / e  # not e **= -1: NumPy's in-place power took 2.5-7x as long as this
    if bias is None:
        xp.negative(z, out=out)
    else:
        xp.subtract(-bias, z, out=out)  # -(z + bias) in one pass
    xp.minimum(out, -low, out=out)  # -max(z, low)
    xp.exp(out, out=out)
    out += 1.0
    return xp.divide(1.0, out, out=out)


def backprop_sigmoid(dA, a, /, *, xp, out=None):
    """dZ = dA * sigma'(z) with sigma'(z) = sigma(z) (1 - sigma(z)) = a (1 - a)."""
    g = 1.0 - a
    g *= a
    if out is None:
        g *= dA
        return g
    return xp.multiply(dA, g, out=out)


def tanh(z, /, *, xp, out=None, bias=None):
    """f(z) = tanh z."""
    z = _plus(z, bias, out, xp)
    return xp.tanh(z) if out is None else xp.tanh(z, out=out)


def backprop_tanh(dA, a, /, *, xp, out=None):
    """dZ = dA * (1 - a^2)."""
    g = a * a
    g *= -1.0
    g += 1.0
    if out is None:
        g *= dA
        return g
    return xp.multiply(dA, g, out=out)


def relu(z, /, *, xp, out=None, bias=None):
    """f(z) = max(0, z)."""
    z = _plus(z, bias, out, xp)
    return xp.maximum(z, 0.0) if out is None else xp.maximum(z, 0.0, out=out)


def backprop_relu(dA, a, /, *, xp, out=None):
    """dZ = dA where z > 0 (equivalently a > 0), else 0; the derivative at z = 0 is 0."""
    if out is None:
        return xp.where(a > 0, dA, 0.0)
    if out is not dA:
        out[...] = dA
    xp.copyto(out, 0.0, where=a <= 0)  # a selection, as where: inf * 0 never makes NaN
    return out


def softmax(z, /, *, xp, out=None, bias=None):
    """softmax(z)_j = e^(z_j - m) / sum_k e^(z_k - m) over the last axis, m = max_k z_k.

    Subtracting the row maximum leaves the value unchanged and keeps every exponent <= 0."""
    z = _plus(z, bias, out, xp)
    k = z.shape[-1]
    if out is not None:  # the variant: the array's own reduction, without the wrappers
        e = xp.exp(xp.subtract(z, z.max(axis=-1, keepdims=True), out=out), out=out)
        e /= e @ kept_ones((k, 1), e.dtype, getattr(e, "device", None), xp)  # sum_k e_k
        return e
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    e /= e @ ones((k, 1), e, xp=xp)  # the row sums, sum_k e_k
    return e


def backprop_softmax(dA, a, /, *, xp, out=None):
    """dZ_j = sum_i dA_i da_i/dz_j = a_j (dA_j - sum_i dA_i a_i)  (Jacobian diag(a) - a a^T)."""
    return a * (dA - xp.sum(dA * a, axis=-1, keepdims=True))


@dataclasses.dataclass(frozen=True)
class ActivationFn:
    """An activation's forward ``f(z, *, xp, out=None)`` and backward
    ``g(dA, a, *, xp, out=None)`` (``out``: the in-place variant, see the module
    docstring); also the pair ``(forward, backward)``."""

    name: str
    forward: Callable
    backward: Callable

    def __iter__(self):
        return iter((self.forward, self.backward))

    def __getitem__(self, i: int) -> Callable:
        return (self.forward, self.backward)[i]


ACTIVATIONS = {
    a.name: a
    for a in (
        ActivationFn("identity", identity, backprop_identity),
        ActivationFn("sigmoid", sigmoid, backprop_sigmoid),
        ActivationFn("tanh", tanh, backprop_tanh),
        ActivationFn("relu", relu, backprop_relu),
        ActivationFn("softmax", softmax, backprop_softmax),
    )
}


def get_activation(name: str) -> ActivationFn:
    """The activation called ``name``; ConfigError lists the names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown activation {name!r}; use one of: {', '.join(ACTIVATIONS)}",
            setting="activation",
        ) from None


def forward(name: str, z, /, *, xp):
    """Apply the activation called ``name``."""
    return get_activation(name).forward(z, xp=xp)


def backward(name: str, dA, a, /, *, xp):
    """Backward pass of the activation called ``name``: dZ from dA and the output a."""
    return get_activation(name).backward(dA, a, xp=xp)
