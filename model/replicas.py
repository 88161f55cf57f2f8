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

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from array_api_compat import array_namespace, device, is_numpy_namespace

from backends import ConfigError, host_rng
from backends.blas import blas_threads, limit_blas
from backends.transfer import to_numpy
from model.fit import check_inputs, check_schedule, run_epoch, scores
from model.optimizers import replica_scale

__all__ = [
    "ReplicaFitResult",
    "fit_replicas",
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
    shapes = model.param_shapes()
    counts = {p.shape[0] if p.ndim else None for p in params.values()}
    if (
        set(params) != set(shapes)
        or len(counts) != 1
        or any(tuple(params[k].shape[1:]) != s for k, s in shapes.items())
    ):
        got = {k: tuple(p.shape) for k, p in params.items()}
        raise ConfigError(
            f"replica-stacked parameters need {model.sizes}'s shapes with one leading "
            f"replica axis (W1: (R, {model.sizes[0]}, {model.sizes[1]}), ...), got {got}; "
            "make them with init_replicas or stack_params"
        )
    return counts.pop()


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
    of the replicas where ``active`` is False replaced by 0: g_r <- where(active_r, g_r, 0)."""

    optimizer: object
    active: object

    def update(self, params, grads, state, /, *, xp=None):
        xp = xp or array_namespace(self.active)
        masked = {k: xp.where(replica_scale(self.active, g, xp), g, 0.0) for k, g in grads.items()}
        return self.optimizer.update(params, masked, state, xp=xp)


def _freeze(optimizer, params, state, last, active, newly, /, *, xp):
    """Freeze the replicas of the (R,) mask ``newly``: p_r <- last_r (the epoch's start),
    every optimizer buffer of r <- 0. Returns the optimizer that keeps the inactive
    replicas still: lr_r <- lr_r * active_r and their gradients masked (:class:`_Frozen`)."""
    for k, p in params.items():
        p[...] = xp.where(replica_scale(newly, p, xp), last[k], p)
    for buffers in state.values():
        if isinstance(buffers, dict):
            for v in buffers.values():
                v[...] = xp.where(replica_scale(newly, v, xp), 0.0, v)
    like = next(iter(params.values()))
    lr = xp.astype(active, like.dtype) * optimizer.lr  # x1.0 is exact: active lrs unchanged
    return _Frozen(dataclasses.replace(optimizer, lr=lr), active)


@dataclasses.dataclass
class ReplicaFitResult:
    """Trained replica-stacked parameters and optimizer state; per replica its history
    (host floats, its finite epochs only) and the epoch (from 1) it diverged in, or None."""

    params: dict
    state: dict
    history: list[dict]
    diverged: list[int | None]


def _epoch_values(model, params, loss, validation, /, *, xp):
    """(k, R) device array of the epoch's per-replica values: where(finite, C_r, NaN) and
    the validation scores (loss, hits) when given; names in the same order."""
    finite = xp.isfinite(loss)
    for p in params.values():
        finite = xp.logical_and(finite, xp.all(xp.isfinite(p), axis=tuple(range(1, p.ndim))))
    rows, names = [xp.where(finite, loss, math.nan)], ["loss"]
    if validation is not None:
        for name, value in scores(model, params, *validation, xp=xp).items():
            rows.append(xp.astype(value, loss.dtype))
            names.append(f"val_{name}")
    return xp.stack(rows), names


def fit_replicas(
    model,
    params: dict,
    X,
    Y,
    *,
    optimizer,
    epochs: int,
    batch_size: int | None = None,
    rngs: Sequence | None = None,
    state: dict | None = None,
    validation: tuple | None = None,
    start_epoch: int = 0,
    diverged: Sequence[int | None] | None = None,
    callback: Callable | None = None,
) -> ReplicaFitResult:
    """Train the R replicas of ``params`` (replica-stacked, updated in place) for epochs
    ``start_epoch .. epochs - 1``, replica r exactly as ``fit`` trains ``replica(params, r)``
    with ``rng=rngs[r]`` and lr[r], lambda[r] of ``optimizer`` (see :func:`per_replica`).

    ``X``, ``Y`` (and ``validation``) on the parameters' device, shared by all replicas.
    ``rngs``: one host generator per replica (default: each seeded 0, as ``fit``).
    ``diverged`` (from a previous result) keeps those replicas frozen. ``callback(epoch,
    params, state, records)`` runs after every epoch, ``records[r]`` being replica r's
    host floats, or None once it has diverged. Training stops early when every replica
    has diverged. See the module docstring for divergence and freezing.
    """
    check_schedule(epochs, batch_size, start_epoch)
    r_count = replica_count(model, params)
    for name, data in (("X, Y", (X, Y)), ("validation", validation)):
        if data is not None and check_inputs(model, params, *data):
            raise ConfigError(
                f"replicas train on {name} held on the parameters' device, not streamed from "
                "host NumPy data; move them with backend.asarray"
            )
    like = next(iter(params.values()))
    xp = array_namespace(like)
    n = X.shape[0]
    targets = model.prepare_targets(Y, dtype=like.dtype, xp=xp)
    state = optimizer.init(params) if state is None else state
    shuffle = batch_size is not None and batch_size < n
    if shuffle:
        rngs = [host_rng(0) for _ in range(r_count)] if rngs is None else list(rngs)
        if len(rngs) != r_count:
            raise ConfigError(f"{len(rngs)} random generators given for {r_count} replicas")
    diverged = [None] * r_count if diverged is None else list(diverged)
    active = xp.asarray([d is None for d in diverged], device=device(like))
    step = optimizer
    if not all(d is None for d in diverged):  # resumed: keep the diverged ones frozen
        step = _freeze(optimizer, params, state, params, active, ~active, xp=xp)
    last = {k: xp.asarray(p, copy=True) for k, p in params.items()}
    batch = n if batch_size is None else min(batch_size, n)
    product = batch * max(a * b for a, b in zip(model.sizes[:-1], model.sizes[1:], strict=True))
    threads = blas_threads(product) if is_numpy_namespace(xp) else None
    history: list[dict] = [{} for _ in range(r_count)]
    with limit_blas(threads):
        for epoch in range(start_epoch, epochs):
            if all(d is not None for d in diverged):
                break
            for k, p in params.items():
                last[k][...] = p
            order = None
            if shuffle:
                orders = [rng.permutation(n) for rng in rngs]
                order = array_namespace(orders[0]).stack(orders)  # host (R, n)
            params, state, loss = run_epoch(
                model, params, state, X, targets, step, batch_size=batch_size, order=order, xp=xp
            )
            values, names = _epoch_values(model, params, loss, validation, xp=xp)
            host = (to_numpy(values) + 0.0).tolist()  # the epoch's one read-back; -0 -> 0
            newly = [d is None and not math.isfinite(host[0][r]) for r, d in enumerate(diverged)]
            records = []
            for r in range(r_count):
                if newly[r]:
                    diverged[r] = epoch + 1
                if diverged[r] is not None:
                    records.append(None)
                    continue
                record = {name: row[r] for name, row in zip(names, host, strict=True)}
                if "val_hits" in record:
                    record["val_accuracy"] = record.pop("val_hits") / validation[0].shape[0]
                for k, v in record.items():
                    history[r].setdefault(k, []).append(v)
                records.append(record)
            if any(newly):
                active = xp.asarray([d is None for d in diverged], device=device(like))
                mask = xp.asarray(newly, device=device(like))
                step = _freeze(optimizer, params, state, last, active, mask, xp=xp)
            if callback is not None:
                callback(epoch, params, state, records)
    return ReplicaFitResult(params, state, history, diverged)
