"""Replicas: R networks of one architecture trained together, in one batched pass.

Replica-stacked parameters carry a leading replica axis: ``W_l`` of shape
(R, n_{l-1}, n_l), ``b_l`` of shape (R, n_l); replica r is ``{k: p[r] for k, p in
params.items()}``. The math is the single network's own: :class:`model.mlp.MLP`, the losses
and the optimizers are written so that a leading axis broadcasts through them (R small
matrix products become one batched ``matmul``), and :func:`fit_replicas` runs the same
:func:`model.fit.run_epoch` as :func:`model.fit.fit`. A single run keeps unstacked
parameters (no leading axis): the same code, not a second path.

Replica r is the single fit it stands for:

- initial weights: ``model.init_params(backend, rng_r)`` (:func:`init_replicas`);
- batches: each epoch ``rng_r.permutation(n)`` on the host, as ``fit`` draws them; batch k
  of every replica is gathered on the device by one ``take`` (shape (R, m, ...));
- hyperparameters: lr[r] and lambda[r] (:func:`per_replica`), arrays of shape (R,)
  broadcast as (R, 1, 1) for weights and (R, 1) for biases in the optimizer's update.

Divergence is detected once per epoch from one (R,) vector read back together with the
validation scores: v_r = where(C_r and every parameter of replica r finite, C_r, NaN),
C_r the epoch's training loss. A replica whose v_r is not finite is frozen: its parameters
go back to their values at the start of that epoch (its last finite epoch), its optimizer
buffers to 0, its learning rate to 0, and from then on its gradients are replaced by 0
(``where``), so its update is exactly 0 (p <- p - 0, v <- mu 0 - 0, m <- b1 0 + (1 - b1)
lambda p with step size 0). Replicas never mix: every product and reduction is per
replica, so a diverging replica changes no other.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from backends import ConfigError
from model.checks import param_layout
from model.optimizers import replica_scale

__all__ = [
    "Freezer",
    "init_replicas",
    "per_replica",
    "replica",
    "replica_count",
    "stack_params",
]


def stack_params(replicas: Sequence[dict], /) -> dict:
    """Stack R parameter dicts (same names and shapes) along a new leading axis:
    p[r] = replicas[r][name]."""
    xp = array_namespace(*replicas[0].values())
    return {k: xp.stack([p[k] for p in replicas]) for k in replicas[0]}


def replica(params: dict, r: int, /) -> dict:
    """Replica r's parameters (or optimizer buffers): p[r] for every array (views)."""
    return {k: v[r, ...] for k, v in params.items()}


def replica_count(model, params: dict, /) -> int:
    """R, the leading axis of replica-stacked ``params``; a ConfigError when the
    parameters are not ``model``'s shapes with one leading axis shared by all."""
    count = param_layout(model, params)
    if count is None:
        raise ConfigError(
            f"replica-stacked parameters need {model.sizes}'s shapes with one leading "
            f"replica axis (W1: (R, {model.sizes[0]}, {model.sizes[1]}), ...), got one "
            "network's; make them with init_replicas or stack_params"
        )
    return count


def init_replicas(model, backend, rngs: Sequence, init: str = "auto") -> dict:
    """Replica-stacked initial parameters: replica r is ``model.init_params(backend,
    rngs[r], init)``, drawn on the host from its own generator as a single run draws them."""
    return stack_params([model.init_params(backend, rng, init) for rng in rngs])


def per_replica(optimizer, *, lr=None, weight_decay=None, like):
    """``optimizer`` with a learning rate and weight decay per replica: each a number (the
    same for all) or a sequence or 1-D host array of R numbers, each checked as the
    optimizer checks its own, stored as an (R,) array of ``like``'s dtype on its device (a
    Python number when all R are equal, as a single run uses it)."""
    xp = array_namespace(like)
    changes = {}
    for name, values in (("lr", lr), ("weight_decay", weight_decay)):
        if values is None:
            continue
        values = np.asarray(values)
        if values.ndim > 1:
            raise ConfigError(f"{name} per replica must be one number per replica, got shape "
                              f"{values.shape}", setting=name)  # fmt: skip
        values = np.atleast_1d(values).tolist()
        for v in values:
            dataclasses.replace(optimizer, **{name: v})  # raises for a value it refuses
        values = [float(v) for v in values]
        if len(set(values)) == 1:
            changes[name] = values[0]
        else:
            changes[name] = xp.asarray(values, dtype=like.dtype, device=device(like))
    return dataclasses.replace(optimizer, **changes)


@dataclasses.dataclass(frozen=True)
class _Frozen:
    """``optimizer`` (learning rate already 0 for the frozen replicas) with the gradients
    of the replicas where ``active`` is False replaced by 0, g_r <- where(active_r, g_r, 0),
    and their state parameters kept as they are; ``moving`` is ``active`` on the host (a
    line-search optimizer keeps those replicas where they are)."""

    optimizer: Any
    active: Any
    moving: tuple = ()

    @property
    def grad_scale(self):
        return self.optimizer.grad_scale

    @property
    def line_search(self) -> bool:
        return getattr(self.optimizer, "line_search", False)

    def update(self, params, grads, state, /, *, decay=None, scale=1.0, xp=None):
        xp = xp or array_namespace(self.active)
        masked = {k: xp.where(replica_scale(self.active, g, xp), g, 0.0) for k, g in grads.items()}
        return self.optimizer.update(params, masked, state, decay=decay, scale=scale, xp=xp)

    def minimize_step(self, closure, params, state, /, **options):
        return self.optimizer.minimize_step(closure, params, state, **options,
                                            active=list(self.moving))  # fmt: skip

    def renew(self, params, renewed: dict) -> dict:
        xp = array_namespace(self.active)
        return {
            k: xp.where(replica_scale(self.active, v, xp), v, params[k]) for k, v in renewed.items()
        }


class Freezer:
    """The fit's bookkeeping of divergence, per network (one, or R replicas): its history
    (finite epochs only), the epoch it diverged in (``diverged``), and with ``keep`` (the
    "freeze" policy) its parameters at the start of each epoch, to put it back there and
    hold it still (:class:`_Frozen`) once it diverges. A replica that early stopping
    stopped (``stopped``) is held still the same way, its parameters and buffers as they
    are. ``optimizer`` is the one to step with: the given one (:meth:`use`) until a
    replica is held."""

    def __init__(self, optimizer, params, state, count, diverged, *, keep: bool):
        self.base, self.optimizer, self.keep = optimizer, optimizer, keep
        self.single = count is None
        n = 1 if count is None else count
        self.stopped = [False] * n
        self.diverged = [None] * n if diverged is None else list(diverged)
        if len(self.diverged) != n:
            raise ConfigError(f"diverged lists {len(self.diverged)} replicas for {n}")
        self.history: list[dict] = [{"loss": []} if self.single else {} for _ in range(n)]
        self.newly = [False] * n
        self.last: dict | None = None
        self._like = next(iter(params.values()))
        if any(d is not None for d in self.diverged):  # resumed: keep those frozen
            self._hold(params, state, params, [d is not None for d in self.diverged])

    @property
    def held(self) -> list[bool]:
        """Per network: whether it has diverged or stopped, and is held still."""
        return [d is not None or s for d, s in zip(self.diverged, self.stopped, strict=True)]

    @property
    def all_held(self) -> bool:
        """Whether every network has diverged or stopped: nothing is left to train."""
        return all(self.held)

    def use(self, optimizer) -> None:
        """Step with ``optimizer`` (the epoch's learning rates), the held networks held."""
        self.base = optimizer
        self.optimizer = self._wrapped(optimizer) if any(self.held) else optimizer

    def stop(self, newly: list[bool], params) -> None:
        """Hold the replicas that early stopping stopped in this epoch (one network: the
        fit ends)."""
        self.stopped = [s or n for s, n in zip(self.stopped, newly, strict=True)]
        if any(newly) and not self.single:
            self.optimizer = self._wrapped(self.base, like=next(iter(params.values())))

    def _wrapped(self, optimizer, like=None):
        """``optimizer`` with the held replicas' learning rates and gradients 0."""
        moving = [not h for h in self.held]
        like = like if like is not None else self._like
        xp = array_namespace(like)
        active = xp.asarray(moving, device=device(like))
        lr = optimizer.lr
        if not isinstance(lr, int | float) or lr:  # x1.0 is exact: active lrs unchanged
            lr = xp.astype(active, like.dtype) * lr
        held = copy.copy(optimizer)
        object.__setattr__(held, "lr", lr)
        return _Frozen(held, active, tuple(moving))

    def remember(self, params) -> None:
        """Keep the parameters at the start of an epoch (the "freeze" policy only)."""
        if self.keep:
            self.last = {k: array_namespace(p).asarray(p, copy=True) for k, p in params.items()}

    def records(self, epoch: int, host, names, validation, lrs=None) -> list:
        """Per network the epoch's record (host floats; ``lrs``, one per network, as
        ``lr``), None once diverged or stopped; a network whose loss is not finite
        diverged in this epoch (``newly``)."""
        columns = [[v] for v in host] if self.single else host
        records: list[dict | None] = []
        for r in range(len(self.diverged)):
            record = {name: row[r] for name, row in zip(names, columns, strict=True)}
            self.newly[r] = self.diverged[r] is None and not math.isfinite(record["loss"])
            if self.newly[r]:
                self.diverged[r] = epoch + 1
            if self.diverged[r] is not None or self.stopped[r]:
                records.append(None)
                continue
            if "val_hits" in record:
                record["val_accuracy"] = record.pop("val_hits") / validation[0].shape[0]
            if lrs is not None:
                record["lr"] = lrs[r]
            for k, v in record.items():
                self.history[r].setdefault(k, []).append(v)
            records.append(record)
        return records

    def freeze(self, params, state, /, *, xp):
        """Put the networks that diverged in this epoch back to its start and hold them
        still from now on; returns ``state``, their buffers zeroed."""
        if any(self.newly):
            self._hold(params, state, self.last, self.newly)
        return state

    def _hold(self, params, state, last, newly) -> None:
        like = next(iter(params.values()))
        xp = array_namespace(like)
        if self.single:  # one network: nothing goes on training
            for k in params:
                params[k] = last[k]
            return
        mask = xp.asarray(newly, device=device(like))
        for k, p in params.items():
            params[k] = xp.where(replica_scale(mask, p, xp), last[k], p)
        for key, buffers in state.items():
            if isinstance(buffers, dict) and key != "best":  # early stopping's best: kept
                for k, v in buffers.items():
                    buffers[k] = xp.where(replica_scale(mask, v, xp), 0.0, v)
        self.optimizer = self._wrapped(self.base, like=like)

    def result(self):
        """``(history, diverged)`` as :class:`model.fit.FitResult` holds them."""
        if self.single:
            return self.history[0], (self.diverged if self.keep else None)
        return self.history, self.diverged
