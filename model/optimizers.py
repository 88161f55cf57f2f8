"""Optimizers: ``init(params) -> state`` and ``update(params, grads, state) -> (params,
state)`` pairs, the same math on every namespace.

Weight decay is a masked transform applied to the gradients first (optax's
``add_decayed_weights``): with L2 weight decay lambda the loss gains lambda/2 ||p||^2 for
every parameter the network declares decayed (:attr:`model.network.Sequential.decayed`:
the Dense weights, never biases or normalization parameters), so

    g = dC/dp + lambda p        (p decayed; g = dC/dp otherwise)

    gd / sgd   p <- p - lr g                                   (gd = sgd on the full batch)
    momentum   v <- mu v - lr g;  p <- p + v                   (classical)
    nesterov   v <- mu v - lr g;  p <- p + mu v - lr g         (Sutskever et al. 2013 form)
    adam       m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) g^2
               p <- p - lr m_hat / (sqrt(s_hat) + eps),  m_hat = m / (1 - b1^t),
               s_hat = s / (1 - b2^t)
    lbfgs      full-batch L-BFGS with a strong Wolfe line search (:mod:`model.lbfgs`),
               lr scaling its first trial step

Gradient clipping (:func:`clip_global_norm`) scales a step's gradients to a global norm
of at most c before the optimizer sees them (before weight decay, as PyTorch's
``clip_grad_norm_`` on ``.grad``).

``update`` takes gradients times a ``scale`` (default 1): a training step can fold an
optimizer's :attr:`grad_scale` into the loss gradient once (SGD's: lr, so its step is
one subtraction per parameter) instead of scaling every parameter's gradient.

``lr`` and ``weight_decay`` are Python numbers, or arrays of shape (R,) for R replica-stacked
networks (parameters with a leading replica axis, see :mod:`model.replicas`): replica r
then steps with lr[r] and lambda[r], each broadcast over its parameter's other axes.

Every result is stored back (``params[name] = p``, ``state["m"][name] = m``): on NumPy,
CuPy and PyTorch the arithmetic happens in place, on immutable arrays (JAX) it makes new
ones, and either way the dicts hold the new values. Gradients are never modified.
``state`` is a dict of plain Python numbers and dicts of arrays, so it can be
checkpointed; the step count t is a Python int: nothing is read back from the device.

:data:`OPTIMIZERS` names the choices a run offers, each with its default learning rate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from array_api_compat import array_namespace

from backends.errors import ConfigError, check_number

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "Optimizer",
    "add_decayed_weights",
    "clip_global_norm",
    "make_optimizer",
    "replica_scale",
]


def replica_scale(value, p, xp):
    """A hyperparameter as it multiplies ``p``: a Python number as it is; a per-replica
    array of shape (R,) reshaped to (R, 1, ..., 1), so that value[r] scales p[r]."""
    if isinstance(value, int | float):
        return value
    return xp.reshape(value, (value.shape[0],) + (1,) * (p.ndim - 1))


def _is_one(scale) -> bool:
    return isinstance(scale, int | float) and scale == 1.0


def _nonzero(value) -> bool:
    """Whether a hyperparameter (number or per-replica array) may be nonzero."""
    return not isinstance(value, int | float) or value != 0


def add_decayed_weights(grads: dict, params: dict, weight_decay, decay, scale=1.0, *, xp) -> dict:
    """g + scale lambda p for the parameters named in ``decay``, g for the others (new
    arrays where changed; ``grads`` itself is left alone)."""
    if not _nonzero(weight_decay):
        return grads
    if decay is None:
        raise ConfigError(
            "weight decay needs to know which parameters decay: pass decay=network.decayed "
            "to update (fit does)"
        )
    out = dict(grads)
    for name in decay:
        if name in out:
            p = params[name]
            decay_p = replica_scale(weight_decay, p, xp) * p
            out[name] = out[name] + (
                decay_p if _is_one(scale) else replica_scale(scale, p, xp) * decay_p
            )
    return out


def clip_global_norm(grads: dict, max_norm, scale=1.0, *, stacked: bool, xp) -> dict:
    """g * min(1, c / ||g||), ||g|| = sqrt(sum over every gradient of sum g^2) (per
    replica for ``stacked`` ones), c = ``max_norm`` (a number or one per replica). The
    gradients come as G = scale g (see :meth:`Optimizer.update`), so G is scaled by
    min(1, c |scale| / ||G||): the norm clipped is the true gradient's. New arrays."""
    total = None
    for g in grads.values():
        axes = tuple(range(1 if stacked else 0, g.ndim))
        square = xp.sum(g * g, axis=axes) if axes else g * g
        total = square if total is None else total + square
    norm = xp.sqrt(total)
    limit = max_norm * (abs(scale) if isinstance(scale, int | float) else xp.abs(scale))
    over = norm > limit
    factor = xp.where(over, limit / xp.where(over, norm, 1.0), 1.0)
    return {k: g * (replica_scale(factor, g, xp) if stacked else factor) for k, g in grads.items()}


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


class Optimizer:
    """What every optimizer has: ``lr``, ``weight_decay``, the state buffers it keeps per
    parameter (:attr:`buffers`), and ``update`` over a dict of parameters, one
    :meth:`_step` per parameter."""

    lr: Any
    weight_decay: Any

    @property
    def buffers(self) -> tuple[str, ...]:
        """The names of the per-parameter state buffers (each the parameter's shape)."""
        return ()

    @property
    def grad_scale(self):
        """The factor a training step may fold into the gradients it passes to
        :meth:`update` (with ``scale`` = this): 1 unless the step gets cheaper."""
        return 1.0

    def init(self, params) -> dict:
        """Fresh state: step 0 and zero buffers."""
        state: dict = {"step": 0}
        if self.buffers:
            xp = array_namespace(*params.values())
            for b in self.buffers:
                state[b] = {k: xp.zeros_like(p) for k, p in params.items()}
        return state

    def update(self, params, grads, state, /, *, decay=None, scale=1.0, xp=None):
        """One step for every parameter named in ``grads`` (``scale`` times the gradients);
        ``decay`` names the parameters weight decay applies to. See the module docstring."""
        xp = xp or array_namespace(*grads.values())
        if not isinstance(self.weight_decay, float) or self.weight_decay:
            grads = add_decayed_weights(grads, params, self.weight_decay, decay, scale, xp=xp)
        state = {**state, "step": state["step"] + 1}
        self._steps(params, grads, state, scale, xp)
        return params, state

    def _steps(self, params, grads, state, scale, xp) -> None:
        """One :meth:`_step` per parameter, each result stored back."""
        step = self._step
        for name, g in grads.items():
            params[name] = step(name, params[name], g, state, scale, xp)

    def _step(self, name, p, g, state, scale, xp):  # pragma: no cover - every optimizer has one
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class SGD(Optimizer):
    """Gradient descent, plain (momentum 0), classical momentum or Nesterov."""

    lr: Any = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: Any = 0.0

    def __post_init__(self):
        _check(self, lr={"low": 0, "low_open": True}, momentum={"low": 0, "high": 1},
               weight_decay={"low": 0})  # fmt: skip

    @property
    def buffers(self) -> tuple[str, ...]:
        return ("velocity",) if self.momentum else ()

    @property
    def grad_scale(self):
        """lr (a number, or one per replica): the step then is p <- p - G for G = lr g."""
        return self.lr

    def _steps(self, params, grads, state, scale, xp) -> None:
        if self.momentum or not self._folded(scale):
            super()._steps(params, grads, state, scale, xp)
            return
        for name, g in grads.items():  # plain SGD on G = lr g: p <- p - G, as _step does
            p = params[name]
            p -= g
            params[name] = p

    def _folded(self, scale) -> bool:
        """Whether the gradients come already scaled by lr (``scale`` is lr)."""
        return scale is self.lr or (isinstance(self.lr, float) and scale == self.lr)

    def _step(self, name, p, g, state, scale, xp):
        if self._folded(scale):
            step = g  # G = lr g already
        else:
            step = replica_scale(self.lr, p, xp) * g
            if not _is_one(scale):
                step /= replica_scale(scale, p, xp)
        if not self.momentum:
            p -= step
            return p
        v = state["velocity"][name]
        v *= self.momentum
        v -= step
        state["velocity"][name] = v
        if self.nesterov:
            p += self.momentum * v - step
        else:
            p += v
        return p


@dataclasses.dataclass(frozen=True)
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    lr: Any = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: Any = 0.0
    buffers: ClassVar[tuple[str, ...]] = ("m", "s")  # type: ignore[misc]

    def __post_init__(self):
        beta = {"low": 0, "high": 1, "high_open": True}
        _check(self, lr={"low": 0, "low_open": True}, beta1=beta, beta2=beta,
               eps={"low": 0}, weight_decay={"low": 0})  # fmt: skip

    def _step(self, name, p, g, state, scale, xp):
        t = state["step"]
        b1, b2 = self.beta1, self.beta2
        if not _is_one(scale):
            g = g / replica_scale(scale, p, xp)
        m, s = state["m"][name], state["s"][name]
        m *= b1
        m += (1.0 - b1) * g
        s *= b2
        s += (1.0 - b2) * (g * g)
        state["m"][name], state["s"][name] = m, s
        step = s * (1.0 / (1.0 - b2**t))
        step = xp.sqrt(step)
        step += self.eps
        step = m / step
        step *= replica_scale(self.lr / (1.0 - b1**t), p, xp)
        p -= step
        return p


@dataclasses.dataclass(frozen=True)
class Choice:
    """One optimizer a run can name: how to make it, its default learning rate, and
    whether it trains on the full batch only."""

    make: Any
    default_lr: float
    options: dict = dataclasses.field(default_factory=dict)
    full_batch: bool = False

    def __call__(self, lr=None, *, weight_decay: float = 0.0, **options):
        lr = self.default_lr if lr is None else lr
        return self.make(lr, weight_decay=weight_decay, **{**self.options, **options})

    def buffer_count(self) -> int:
        return len(self(self.default_lr).buffers)


def _lbfgs(lr, **options):
    """:class:`model.lbfgs.LBFGS` (imported when asked for: it builds on this module)."""
    from model.lbfgs import LBFGS

    return LBFGS(lr, **options)


OPTIMIZERS: dict[str, Choice] = {
    "gd": Choice(SGD, 0.5, full_batch=True),
    "sgd": Choice(SGD, 0.1),
    "momentum": Choice(SGD, 0.05, {"momentum": 0.9}),
    "nesterov": Choice(SGD, 0.05, {"momentum": 0.9, "nesterov": True}),
    "adam": Choice(Adam, 0.01),
    "lbfgs": Choice(_lbfgs, 1.0, full_batch=True),
}


def make_optimizer(name: str, lr=None, *, weight_decay: float = 0.0, **options):
    """The optimizer called ``name`` (:data:`OPTIMIZERS`; gd and sgd differ only in the
    batch size the fit uses), with its default learning rate unless ``lr`` is given."""
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {name!r}; use one of: {', '.join(OPTIMIZERS)}",
            setting="optimizer",
        )
    return OPTIMIZERS[name](lr, weight_decay=weight_decay, **options)
