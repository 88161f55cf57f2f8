"""Optimizers: ``update(params, grads, state) -> (params, state)``, the same math everywhere.

With L2 weight decay lambda the loss gains lambda/2 * sum ||W_l||^2 over the weight
matrices (not the biases), so each weight gradient gains lambda * W_l:

    g = dC/dp + lambda * p        (p a weight; g = dC/dp for a bias)

    gd / sgd   p <- p - lr g                                   (gd = sgd on the full batch)
    momentum   v <- mu v - lr g;  p <- p + v                   (classical)
    nesterov   v <- mu v - lr g;  p <- p + mu v - lr g         (Sutskever et al. 2013 form)
    adam       m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) g^2
               p <- p - lr m_hat / (sqrt(s_hat) + eps),  m_hat = m / (1 - b1^t),
               s_hat = s / (1 - b2^t)

``lr`` and ``weight_decay`` are Python numbers, or arrays of shape (R,) for R replica-stacked
networks (parameters with a leading replica axis, see :mod:`model.replicas`): replica r
then steps with lr[r] and lambda[r], each broadcast over its parameter's other axes.

Parameters and optimizer buffers are updated in place (the only in-place writes of the
portable step; :mod:`model.fast`, the in-place step, also writes its own temporaries);
gradients are never modified. ``state`` is a dict of plain Python numbers and
dicts of arrays, so it can be checkpointed. The step count t is a Python int: no value is
read back from the device.
"""

from __future__ import annotations

import dataclasses

from array_api_compat import array_namespace

from backends.errors import ConfigError, check_number

__all__ = ["OPTIMIZERS", "SGD", "Adam", "make_optimizer", "replica_scale"]


def replica_scale(value, p, xp):
    """A hyperparameter as it multiplies ``p``: a Python number as it is; a per-replica
    array of shape (R,) reshaped to (R, 1, ..., 1), so that value[r] scales p[r]."""
    if isinstance(value, int | float):
        return value
    return xp.reshape(value, (value.shape[0],) + (1,) * (p.ndim - 1))


def _decayed(name: str, p, g, weight_decay, xp):
    """g + lambda p for weight matrices (names W...), g for biases (and for lambda = 0)."""
    if name.startswith("W") and not (isinstance(weight_decay, int | float) and not weight_decay):
        return g + replica_scale(weight_decay, p, xp) * p
    return g


def _check(optimizer, **bounds) -> None:
    """Each hyperparameter of ``optimizer`` named in ``bounds`` checked by
    :func:`backends.errors.check_number` with those bounds and stored as a Python float (a
    NumPy scalar included); ``lr`` and ``weight_decay`` may also be per-replica arrays,
    whose values :func:`model.replicas.per_replica` makes."""
    for name, limits in bounds.items():
        value = getattr(optimizer, name)
        if name in ("lr", "weight_decay") and getattr(value, "ndim", 0) > 0:
            continue
        object.__setattr__(optimizer, name, check_number(name, value, **limits))


def _zeros_like(params, xp):
    return {k: xp.zeros_like(p) for k, p in params.items()}


@dataclasses.dataclass(frozen=True)
class SGD:
    """Gradient descent, plain (momentum 0), classical momentum or Nesterov."""

    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        _check(self, lr={"low": 0, "low_open": True}, momentum={"low": 0, "high": 1},
               weight_decay={"low": 0})  # fmt: skip

    def init(self, params) -> dict:
        """Fresh state: step 0 and, with momentum, zero velocities."""
        if not self.momentum:
            return {"step": 0}
        xp = array_namespace(*params.values())
        return {"step": 0, "velocity": _zeros_like(params, xp)}

    def update(self, params, grads, state, /, *, xp=None):
        """One step; see the module docstring for the equations."""
        xp = xp or array_namespace(*params.values())
        mu = self.momentum
        for name, p in params.items():
            g = _decayed(name, p, grads[name], self.weight_decay, xp)
            lr = replica_scale(self.lr, p, xp)
            if not mu:
                p -= lr * g
                continue
            v = state["velocity"][name]
            v *= mu
            v -= lr * g
            if self.nesterov:
                p += mu * v - lr * g
            else:
                p += v
        return params, {**state, "step": state["step"] + 1}


@dataclasses.dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015) with bias correction."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self):
        beta = {"low": 0, "high": 1, "high_open": True}
        _check(self, lr={"low": 0, "low_open": True}, beta1=beta, beta2=beta,
               eps={"low": 0}, weight_decay={"low": 0})  # fmt: skip

    def init(self, params) -> dict:
        """Fresh state: step 0, zero first and second moments."""
        xp = array_namespace(*params.values())
        return {"step": 0, "m": _zeros_like(params, xp), "s": _zeros_like(params, xp)}

    def update(self, params, grads, state, /, *, xp=None):
        """One step; see the module docstring for the equations."""
        xp = xp or array_namespace(*params.values())
        t = state["step"] + 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1.0 - b1**t)
        s_scale = 1.0 / (1.0 - b2**t)
        for name, p in params.items():
            g = _decayed(name, p, grads[name], self.weight_decay, xp)
            m, s = state["m"][name], state["s"][name]
            m *= b1
            m += (1.0 - b1) * g
            s *= b2
            s += (1.0 - b2) * (g * g)
            p -= replica_scale(step_size, p, xp) * m / (xp.sqrt(s * s_scale) + self.eps)
        return params, {**state, "step": t}


OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam")


def make_optimizer(name: str, lr: float, *, weight_decay: float = 0.0, momentum: float = 0.9):
    """The optimizer called ``name`` (gd and sgd differ only in the batch size the fit uses)."""
    if name in ("gd", "sgd"):
        return SGD(lr, weight_decay=weight_decay)
    if name in ("momentum", "nesterov"):
        return SGD(lr, momentum=momentum, nesterov=name == "nesterov", weight_decay=weight_decay)
    if name == "adam":
        return Adam(lr, weight_decay=weight_decay)
    raise ConfigError(
        f"unknown optimizer {name!r}; use one of: {', '.join(OPTIMIZERS)}", setting="optimizer"
    )
