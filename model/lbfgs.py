"""L-BFGS: full-batch limited-memory BFGS with a strong Wolfe line search.

Minimizes f(x) = C(x) + lambda/2 sum_{W decayed} ||W||^2 over the trained parameters x
(C the loss of the whole training data, lambda the weight decay) as SciPy's L-BFGS-B
does without bounds, and scikit-learn's MLP solver "lbfgs" through it (Nocedal & Wright,
Numerical Optimization, 2nd ed., algorithms 7.4 and 7.5). Iteration k, at x_k with
f_k = f(x_k) and g_k = grad f(x_k) known:

    d_k = -H_k g_k      the two-loop recursion over the newest m pairs (s_i, y_i), with
                        H_k^0 = gamma I, gamma = s'y / y'y of the newest pair (no pair:
                        gamma = 1, d_k = -g_k)
    a_k                 a step meeting the strong Wolfe conditions along d_k
                        (:mod:`model.linesearch`, c1 = 1e-4, c2 = 0.9); the first trial
                        is lr / ||d_k|| without a pair (a step of length lr, SciPy's first
                        step for lr = 1), lr with one (the quasi-Newton step)
    x_{k+1} = x_k + a_k d_k
    s_k = x_{k+1} - x_k,  y_k = g_{k+1} - g_k      kept (rho_k = 1 / s'y) when
                        s'y > eps y'y, eps the dtype's machine epsilon (SciPy's test)

A search that finds no step lowering f leaves x_k where it is and forgets the pairs, so
that the next iteration is a steepest-descent one (SciPy's restart); without a pair to
forget, or at g_k = 0, the network has converged as far as its dtype resolves ("stalled")
and its later iterations keep it there. f never increases from one iteration to the next.

One iteration is one epoch of :func:`model.fit.fit`, which hands :meth:`LBFGS.minimize_step`
a closure computing the loss and the gradients of the whole training data (summed over
the ranks under a communicator). Everything runs as array API code on the parameters'
device; per trial of the line search two scalars per network (phi, phi') come back to
the host, and per iteration three more (g'd, ||d||, then s'y and y'y).

Replica-stacked parameters (a leading axis of R networks, :mod:`model.replicas`) run R
searches in lockstep: each round evaluates every network at its own trial step (a
network whose search has ended at its accepted step), until every search has ended and
the last round was at the accepted steps. Pairs are pushed for all networks at once when
any keeps its pair; a network that does not keep it gets rho = 0 in that slot, which
makes the slot a no-op of its recursion.

The state (a dict of Python values and dicts of arrays, so that a checkpoint holds it and
a resumed run continues bit for bit):

    step            iterations done
    g               {name: array}: grad f(x_k), the gradient at the current parameters
    s0 .. s{m-1}    {name: array}: the pairs' s, oldest first (s{m-1} the newest)
    y0 .. y{m-1}    {name: array}: the pairs' y
    loss            [f_k per network] (one entry for one network); absent before the
                    first iteration, which evaluates f_0 and g_0 first
    rho             m lists of one 1 / s'y per network, 0 where a network holds no pair
    gamma           [gamma per network]
    stalled         [per network: True once it cannot lower f further]
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from array_api_compat import array_namespace, device

from backends.errors import ConfigError
from backends.transfer import to_numpy
from model.linesearch import C1, C2, MAX_EVALS, strong_wolfe
from model.optimizers import Optimizer, _check, add_decayed_weights, replica_scale

__all__ = ["LBFGS"]


@dataclasses.dataclass(frozen=True)
class LBFGS(Optimizer):
    """Full-batch L-BFGS (see the module docstring): ``lr`` scales the line search's first
    trial step, ``memory`` is m, the number of (s, y) pairs kept."""

    lr: Any = 1.0
    memory: int = 10
    weight_decay: Any = 0.0
    c1: float = C1
    c2: float = C2
    max_evals: int = MAX_EVALS
    line_search: ClassVar[bool] = True  # fit hands it the whole data's closure

    def __post_init__(self):
        _check(self, lr={"low": 0, "low_open": True}, weight_decay={"low": 0},
               c1={"low": 0, "low_open": True, "high": 0.5, "high_open": True},
               c2={"low": self.c1, "low_open": True, "high": 1, "high_open": True})  # fmt: skip
        for name in ("memory", "max_evals"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"L-BFGS's {name} must be an integer >= 1, got {value!r}")

    @property
    def buffers(self) -> tuple[str, ...]:
        m = range(self.memory)
        return ("g", *(f"s{i}" for i in m), *(f"y{i}" for i in m))

    def update(self, params, grads, state, /, *, decay=None, scale=1.0, xp=None):
        raise ConfigError(
            "L-BFGS takes whole-data steps with a line search: train it with fit and no "
            "batch size (fit calls its minimize_step)",
            setting="optimizer",
        )

    def minimize_step(self, closure, params, state, /, *, decay=None, active=None, xp=None):
        """One iteration on the trained parameters (those named in ``state["g"]``), stored
        back into ``params``. ``closure(params) -> (loss, grads, renewed)`` gives the
        loss C (0-d, or (R,) for replicas), its gradients and the state parameters a
        training-mode pass renews (BatchNorm's). ``active`` (R host bools): the networks
        that may move (the others keep their parameters). Returns ``(params, state, loss,
        renewed)``: C and the renewed state at the new parameters."""
        names = tuple(state["g"])
        xp = xp or array_namespace(params[names[0]])
        run = _Iteration(self, closure, params, names, decay, xp)
        if "loss" not in state:
            state = run.start(state)
        return run.step(state, active)


def _dot(a: dict, b: dict, stacked: bool, xp):
    """sum over the parameters of sum(a * b): 0-d, or (R,) per replica."""
    total = None
    for k, v in a.items():
        axes = tuple(range(1 if stacked else 0, v.ndim))
        part = xp.sum(v * b[k], axis=axes) if axes else v * b[k]
        total = part if total is None else total + part
    return total


def _as_host(value, stacked: bool) -> np.ndarray:
    """A per-network state value (a number, or a list of them, for one network; a list
    of R, or lists of R, for replicas) as a host array with a network axis last."""
    out = np.asarray(value, dtype=np.float64)
    return out if stacked else out[..., None]


def _hyper(value, count: int) -> np.ndarray:
    """A hyperparameter (a number, or a per-replica device array) per network, on the
    host."""
    if isinstance(value, int | float):
        return np.full(count, float(value))
    return np.asarray(to_numpy(value), dtype=np.float64).reshape(count)


def _as_state(value: np.ndarray, stacked: bool, kind=float):
    """A host array with a network axis last as the state stores it (Python values, so
    that a checkpoint writes them as JSON): numbers for one network, lists of R for
    replicas."""
    return np.asarray(value if stacked else value[..., 0], dtype=kind).tolist()


class _Iteration:
    """One L-BFGS iteration's arrays and host values (see the module docstring). Host
    values per network are arrays with a network axis last (length 1 for one network)."""

    def __init__(self, opt: LBFGS, closure, params: dict, names, decay, xp):
        self.opt, self.closure, self.params, self.names = opt, closure, params, names
        self.decay, self.xp = decay, xp
        self.like = params[names[0]]
        self.stacked = False  # replica-stacked parameters: known from the loss's shape

    # ------------------------------------------------------------------ f and g

    def evaluate(self, x: dict):
        """(f, grad f, C, renewed) at the trained parameters ``x`` (the others as they are
        in ``params``), ``x`` stored into ``params``."""
        self.params.update(x)
        loss, grads, renewed = self.closure(self.params)
        self.stacked = getattr(loss, "ndim", 0) > 0
        grads = add_decayed_weights(
            {k: grads[k] for k in self.names}, x, self.opt.weight_decay, self.decay, xp=self.xp
        )
        f = loss
        if not isinstance(self.opt.weight_decay, int | float) or self.opt.weight_decay:
            decayed = {k: x[k] for k in self.decay if k in x}
            f = loss + 0.5 * self.opt.weight_decay * _dot(decayed, x, self.stacked, self.xp)
        return f, grads, loss, renewed

    def host(self, *values) -> np.ndarray:
        """Device scalars (0-d, or (R,)) as one host array (len(values), networks)."""
        xp = self.xp
        out = to_numpy(xp.stack([xp.astype(v, self.like.dtype) for v in values]))
        return np.asarray(out, dtype=np.float64).reshape(len(values), -1)

    def dots(self, *pairs) -> np.ndarray:
        """sum(a * b) of each pair (a, b), per network, read back together."""
        return self.host(*(_dot(a, b, self.stacked, self.xp) for a, b in pairs))

    def start(self, state: dict) -> dict:
        """f_0 and g_0 at the current parameters, and no pairs."""
        f, g, _, _ = self.evaluate({k: self.params[k] for k in self.names})
        f_host = self.host(f)[0]
        count = f_host.shape[0]
        return {
            **state, "g": g, "loss": _as_state(f_host, self.stacked),
            "rho": _as_state(np.zeros((self.opt.memory, count)), self.stacked),
            "gamma": _as_state(np.ones(count), self.stacked),
            "stalled": _as_state(np.zeros(count, dtype=bool), self.stacked, bool),
        }  # fmt: skip

    # ------------------------------------------------------------------ the iteration

    def per_network(self, values):
        """Host values per network as a device array (R,), or a float for one network."""
        if not self.stacked:
            return float(values[0])
        return self.xp.asarray(np.asarray(values, dtype=np.float64), dtype=self.like.dtype,
                               device=device(self.like))  # fmt: skip

    def scale(self, value, p):
        return replica_scale(value, p, self.xp) if self.stacked else value

    def direction(self, state: dict, rho: np.ndarray, gamma: np.ndarray) -> dict:
        """d = -H g by the two-loop recursion over the slots some network uses."""
        used = [i for i in range(self.opt.memory) if np.any(rho[i] != 0)]
        q = dict(state["g"])
        alphas = {}
        for i in reversed(used):
            alphas[i] = self.per_network(rho[i]) * _dot(state[f"s{i}"], q, self.stacked, self.xp)
            q = {k: v - self.scale(alphas[i], v) * state[f"y{i}"][k] for k, v in q.items()}
        q = {k: self.scale(self.per_network(gamma), v) * v for k, v in q.items()}
        for i in used:
            beta = self.per_network(rho[i]) * _dot(state[f"y{i}"], q, self.stacked, self.xp)
            q = {k: v + self.scale(alphas[i] - beta, v) * state[f"s{i}"][k] for k, v in q.items()}
        return {k: -v for k, v in q.items()}

    def masked(self, d: dict, moving: np.ndarray) -> dict:
        """d with the networks that do not move set to 0."""
        if moving.all():
            return d
        if not self.stacked:
            return {k: self.xp.zeros_like(v) for k, v in d.items()}
        mask = self.xp.asarray(moving.tolist(), device=device(self.like))
        return {k: self.xp.where(replica_scale(mask, v, self.xp), v, 0.0) for k, v in d.items()}

    def descent(self, state: dict, rho, gamma, moving):
        """(d, g'd, ||d||) per network; pairs that make d point uphill (rounding can make
        H lose positive definiteness) are forgotten in ``rho`` and ``gamma``."""
        d = self.direction(state, rho, gamma)
        dphi0, norm2 = self.dots((state["g"], d), (d, d))
        uphill = moving & ~(dphi0 < 0) & np.any(rho != 0, axis=0)
        if uphill.any():
            rho[:, uphill], gamma[uphill] = 0.0, 1.0
            d = self.direction(state, rho, gamma)
            dphi0, norm2 = self.dots((state["g"], d), (d, d))
        return d, dphi0, np.sqrt(norm2)

    def step(self, state: dict, active) -> tuple:
        self.stacked = stacked = isinstance(state["loss"], list)
        state = dict(state)
        rho = _as_host(state["rho"], stacked)
        gamma, f0 = _as_host(state["gamma"], stacked), _as_host(state["loss"], stacked)
        stalled = _as_host(state["stalled"], stacked).astype(bool)
        moving = ~stalled if active is None else ~stalled & np.asarray(active, dtype=bool)
        d, dphi0, norm = self.descent(state, rho, gamma, moving)
        stalled |= moving & ~(dphi0 < 0)  # g = 0 (or not finite): nowhere to go
        moving &= dphi0 < 0
        lr = _hyper(self.opt.lr, f0.shape[0])
        fresh = ~np.any(rho != 0, axis=0)
        first = np.where(fresh, lr / np.where(norm > 0, norm, 1.0), lr)
        x0, g0 = {k: self.params[k] for k in self.names}, state["g"]
        _, failed, (f, g, loss, renewed) = self.search(
            x0, self.masked(d, moving), f0, dphi0, first, moving
        )
        rho, gamma = self.remember(state, x0, g0, g, moving & ~failed, rho, gamma)
        for r in np.flatnonzero(failed):  # no step lowered f
            if np.any(rho[:, r] != 0):
                rho[:, r], gamma[r] = 0.0, 1.0  # restart from steepest descent
            else:
                stalled[r] = True
        state.update(
            step=state["step"] + 1, g=g, loss=_as_state(self.host(f)[0], self.stacked),
            rho=_as_state(rho, self.stacked), gamma=_as_state(gamma, self.stacked),
            stalled=_as_state(stalled, self.stacked, bool),
        )  # fmt: skip
        return self.params, state, loss, renewed

    def trial(self, x0: dict, d: dict, alpha: np.ndarray) -> dict:
        a = self.per_network(alpha)
        return {k: x0[k] + self.scale(a, v) * v for k, v in d.items()}

    def search(self, x0, d, f0, dphi0, first, moving):
        """The line searches of the moving networks in lockstep: ``(alpha, failed,
        (f, g, C, renewed) at x0 + alpha d)``, alpha 0 where a search failed."""
        opt = self.opt
        alpha = np.zeros(f0.shape)
        failed = np.zeros(f0.shape, dtype=bool)
        searches = {}
        for r in np.flatnonzero(moving):
            searches[r] = strong_wolfe(f0[r], dphi0[r], first[r], c1=opt.c1, c2=opt.c2,
                                       max_evals=opt.max_evals)  # fmt: skip
            alpha[r] = next(searches[r])
        while True:
            evaluated = alpha.copy()
            found = self.evaluate(self.trial(x0, d, alpha))
            phi, dphi = self.host(found[0], _dot(found[1], d, self.stacked, self.xp))
            for r, search in list(searches.items()):
                try:
                    alpha[r] = search.send((phi[r], dphi[r]))
                except StopIteration as stop:
                    del searches[r]
                    failed[r] = stop.value is None
                    alpha[r] = 0.0 if stop.value is None else stop.value[0]
            if not searches and np.array_equal(alpha, evaluated):
                return alpha, failed, found

    def remember(self, state, x0, g0, g, moved, rho, gamma):
        """Push this iteration's pair (s, y) into ``state`` for the networks that keep it
        (s'y > eps y'y); the new ``(rho, gamma)``."""
        s = {k: self.params[k] - x0[k] for k in self.names}
        y = {k: g[k] - g0[k] for k in self.names}
        sy, yy = self.dots((s, y), (y, y))
        eps = float(self.xp.finfo(self.like.dtype).eps)
        with np.errstate(invalid="ignore"):
            keep = moved & (sy > eps * yy) & (sy > 0) & np.isfinite(sy) & np.isfinite(yy)
        if not keep.any():
            return rho, gamma
        m = self.opt.memory
        for i in range(m - 1):
            state[f"s{i}"], state[f"y{i}"] = state[f"s{i + 1}"], state[f"y{i + 1}"]
        state[f"s{m - 1}"], state[f"y{m - 1}"] = s, y
        newest = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        rho = np.concatenate([rho[1:], newest[None, :]])
        return rho, np.where(keep, sy / np.where(keep, yy, 1.0), gamma)
