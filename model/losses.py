"""Losses: value C and gradient, each pair side by side.

``y_hat`` is the network output after its output activation; ``z`` is the output
layer's pre-activation (logit). N is the number of samples (rows).

    sse            C = 1/2 sum_{i,k} (y_hat - y)^2          dC/dy_hat = y_hat - y
                   (seeds 000/001: C = 1/2 (y - y_hat)^2, so C'(y_hat) = y_hat - y, not
                   y - y_hat as the tutorial writes; seed 004 adds -dC/dW.)
    mse            C = mean_{i,k} (y_hat - y)^2             dC/dy_hat = 2 (y_hat - y) / (N K)
                   (seed 002: C = 1/N sum_i (y_i - max(0, w.x_i + b))^2)
    bce            C = mean_i sum_k -[y log y_hat + (1 - y) log(1 - y_hat)],  y_hat = sigma(z)
                     = mean_i sum_k [log(1 + e^z) - y z]      dC/dz = (sigma(z) - y) / N
                   (seed 003), computed from the logit so it is finite for any z.
    cross_entropy  C = mean_i [logsumexp_k z_ik - z_{i,y_i}]  dC/dz = (softmax(z) - onehot(y)) / N
                   for integer class labels y (a one-hot matrix is accepted too).

Every value and gradient is over the last two axes (N, K): a leading replica axis (R, N, K)
gives R losses, shape (R,), one per stacked network (see :mod:`model.replicas`); without
it the value is a 0-d array.

``bce`` and ``cross_entropy`` take logits and fix the output activation (sigmoid, softmax):
their gradient is returned with respect to z directly, through the shared
:func:`logit_grad`, which needs only the activated output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from array_api_compat import device

from backends.errors import ConfigError
from model.activations import limits, sigmoid, softmax
from model.variants import ones

__all__ = ["LOSSES", "Loss", "get_loss", "one_hot"]


def one_hot(labels, num_classes: int, /, *, dtype, xp):
    """onehot(y)_ik = 1 if y_i == k else 0, built by comparison (no scatter)."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device(labels))
    return xp.astype(labels[..., None] == classes, dtype)


def sse(y_hat, y, /, *, xp):
    """C = 1/2 sum (y_hat - y)^2 over the N K elements."""
    e = y_hat - y
    return 0.5 * xp.sum(e * e, axis=(-2, -1))


def sse_grad(y_hat, y, /, *, xp, scale=1.0):
    """dC/dy_hat = y_hat - y (times ``scale``, see :func:`logit_grad`)."""
    d = y_hat - y
    if scale != 1.0:
        d *= scale
    return d


def mse(y_hat, y, /, *, xp):
    """C = mean (y_hat - y)^2 over the N K elements."""
    e = y_hat - y
    return xp.sum(e * e, axis=(-2, -1)) / _size(e)


def mse_grad(y_hat, y, /, *, xp, scale=1.0):
    """dC/dy_hat = 2 (y_hat - y) / (N K) (times ``scale``, see :func:`logit_grad`)."""
    return (y_hat - y) * (2.0 * scale / _size(y_hat))


def bce(z, y, /, *, xp):
    """C = mean over samples of sum over outputs of log(1 + e^z) - y z.

    Equal to -[y log sigma(z) + (1 - y) log(1 - sigma(z))]; logaddexp(0, z) = log(1 + e^z)
    never overflows."""
    return xp.sum(xp.logaddexp(z, 0.0) - y * z, axis=(-2, -1)) / z.shape[-2]


def bce_grad(z, y, /, *, xp):
    """dC/dz = (sigma(z) - y) / N."""
    return logit_grad(sigmoid(z, xp=xp), y, xp=xp)


def cross_entropy(z, y, /, *, xp):
    """C = mean_i [logsumexp(z_i) - z_{i, y_i}], logsumexp taken around the row maximum."""
    y = _as_one_hot(z, y, xp=xp)
    m = xp.max(z, axis=-1, keepdims=True)
    lse = xp.log(xp.sum(xp.exp(z - m), axis=-1, keepdims=True)) + m
    return xp.sum((lse - z) * y, axis=(-2, -1)) / z.shape[-2]


def cross_entropy_from_probs(y_hat, y, /, *, xp, keep=False):
    """C = mean_i -log y_hat_{i, y_i} from the softmax output (one-hot ``y``).

    Equal to :func:`cross_entropy` of the logits to rounding, in 4 array operations
    instead of 10 (``vecdot`` gives each row's sum_k y_hat_k y_k in one pass, and the sum
    over rows sum_i log p_i is one more vecdot, with ones): the training loop uses it on
    the cached forward output. y_hat is floored at the dtype's smallest normal number, so
    a sample's loss is capped at ~87 (float32) / ~708 (float64) instead of becoming inf.
    ``keep``: the in-place variants' kept ones (:func:`model.variants.ones`)."""
    log_p = xp.log(xp.maximum(xp.vecdot(y_hat, y), limits(y_hat.dtype, xp)[1]))
    n = y_hat.shape[-2]
    return xp.vecdot(log_p, ones((n,), log_p, xp=xp, keep=keep)) * (-1.0 / n)


def cross_entropy_grad(z, y, /, *, xp):
    """dC/dz = (softmax(z) - onehot(y)) / N."""
    return logit_grad(softmax(z, xp=xp), _as_one_hot(z, y, xp=xp), xp=xp)


def logit_grad(y_hat, y, /, *, xp, scale=1.0, out=None):
    """dC/dz = (y_hat - y) / N for bce (y_hat = sigma(z)) and cross_entropy (softmax).

    ``scale`` multiplies the result (the training step folds an optimizer's learning rate
    in here, once, instead of into every parameter's gradient); ``out`` (NumPy, CuPy: the
    in-place variant) receives it, and may be ``y_hat`` itself."""
    d = y_hat - y if out is None else xp.subtract(y_hat, y, out=out)
    d *= scale / y_hat.shape[-2]
    return d


def _as_one_hot(z, y, /, *, xp):
    if y.ndim == z.ndim - 1:
        return one_hot(y, z.shape[-1], dtype=z.dtype, xp=xp)
    return y


def _size(a) -> int:
    """N K: the elements of one network's (N, K) output."""
    return a.shape[-2] * a.shape[-1]


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss and how it meets the network's output.

    ``on_logits`` losses take z and own the output activation ``link``; their gradient
    with respect to z is :func:`logit_grad` of the activated output. The others take the
    activated output and are combined with any output activation's backward pass.
    """

    name: str
    value: Callable
    grad: Callable
    on_logits: bool = False
    link: str | None = None
    value_from_output: Callable | None = None  # cheaper value from link(z) and prepared y


LOSSES = {
    "sse": Loss("sse", sse, sse_grad),
    "mse": Loss("mse", mse, mse_grad),
    "bce": Loss("bce", bce, bce_grad, on_logits=True, link="sigmoid"),
    "cross_entropy": Loss(
        "cross_entropy",
        cross_entropy,
        cross_entropy_grad,
        True,
        "softmax",
        value_from_output=cross_entropy_from_probs,
    ),
}


def get_loss(name: str) -> Loss:
    """The Loss called ``name``; a ConfigError lists the valid names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(
            f"unknown loss {name!r}; use one of: {', '.join(LOSSES)}", setting="loss"
        ) from None
