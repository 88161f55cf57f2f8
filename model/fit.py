"""The training loop: epochs of (shuffled) minibatches, values read back once per epoch.

One loop for one network and for R replica-stacked networks (:mod:`model.replicas`):
the parameters' shapes say which. One epoch: draw a permutation of the rows on the host
(one per replica) when batching, then for each batch gather that batch's rows (``xp.take``
of its indices, into one reused buffer where the namespace allows) and make one step:

    forward (training mode) -> loss -> backward -> optimizer update -> state renewed

No shuffled copy of the data is made, and data already on the parameters' device with
their dtype is used as it is. Host NumPy data with parameters elsewhere (CuPy,
array-api-strict), and memory-mapped files on any backend
(:func:`model.streaming.open_memmap`), are streamed: each batch is gathered on the host
and copied to the device, double-buffered on CuPy (:func:`backends.transfer.host_batches`).

The step folds the optimizer's :attr:`grad_scale` into the loss gradient (SGD's learning
rate: every gradient comes out already scaled) and, on NumPy and CuPy, takes the
operations' in-place variants (:mod:`model.variants`).

The epoch's loss is accumulated on the device as sum_b C_b * n_b / N for mean losses
(sum_b C_b for ``sse``), each C_b taken at the parameters before that batch's step
(scikit-learn's ``loss_curve_`` convention). At the end of the epoch it is combined on the
device with "every parameter is finite" into where(all finite, loss, NaN), per replica,
and read back once together with the validation scores. A non-finite value is a
divergence, handled by the ``divergence`` policy: ``"raise"`` stops the fit with
:class:`DivergenceError` before the epoch counts as done; ``"freeze"`` puts that network
back to its last finite epoch and keeps it still from then on (its optimizer buffers 0,
its learning rate 0, its gradients replaced by 0), while the others go on. Replicas never
mix: every product and reduction is per replica.

On NumPy, the fit runs with the BLAS threads :func:`backends.blas.blas_threads` picks for
the step's largest matrix product (one thread for small ones; see that module).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from array_api_compat import array_namespace, device, is_numpy_namespace

from backends import ConfigError, HandgradError, host_rng
from backends.blas import blas_threads, limit_blas
from backends.errors import check_number
from backends.transfer import batch_bounds, host_batches, is_streamed, take_rows, to_numpy
from model.checks import EVAL_ROWS, check_inputs, check_schedule, param_layout
from model.layers import Noise
from model.optimizers import clip_global_norm, replica_scale
from model.replicas import Freezer
from model.schedules import Control, EarlyStopping, Schedule
from model.variants import writes_in_place

__all__ = [
    "DIVERGENCE",
    "EVAL_ROWS",
    "DivergenceError",
    "FitResult",
    "evaluate",
    "fit",
    "label_accuracy",
    "r2_score",
    "run_epoch",
    "scores",
]

DIVERGENCE = ("raise", "freeze")


class DivergenceError(HandgradError, FloatingPointError):
    """The training loss or a parameter became NaN or infinite in ``epoch`` (from 1)."""

    def __init__(self, epoch: int, loss: float, lr: float | None):
        smaller = lr / 10 if isinstance(lr, float) and math.isfinite(lr) and lr else None
        hint = f" (e.g. {smaller:g})" if smaller else ""
        super().__init__(
            f"training diverged: loss is {loss} at epoch {epoch}; use a smaller learning rate"
            + hint,
            setting="lr",
            suggestion=None if smaller is None else f"{smaller:g}",
        )
        self.epoch = epoch
        self.loss = loss


@dataclasses.dataclass
class FitResult:
    """Trained parameters, final optimizer state and history (host floats): for one
    network a dict of per-epoch lists; for R replicas a list of R such dicts (each
    replica's finite epochs only) and ``diverged``, per replica the epoch (from 1) it
    diverged in, or None. With early stopping, ``best_epoch`` (from 1; a list per replica)
    is the epoch whose parameters ``params`` holds, ``stopped`` whether it stopped early
    (per replica), and ``last`` the parameters of the last epoch trained (to continue
    from)."""

    params: dict
    state: dict
    history: dict | list
    diverged: list | None = None
    best_epoch: int | list | None = None
    stopped: bool | list | None = None
    last: dict | None = None


def _batches(X, Y, order, batch: int, like, /, *, xp, bounds=None):
    """(rows of X, rows of Y) on ``like``'s device for each batch of ``batch`` rows, in row
    order (``order`` None) or in the host permutation ``order``; ``bounds`` (start, stop)
    of at most ``batch`` rows replace those batches (batch k: rows, or ``order``
    positions, ``start:stop``). Streamed host data is cast to ``like``'s dtype (labels
    stay integers).

    ``order`` of shape (R, n), one permutation per replica, gives batches of shape
    (R, m, ...): batch k of replica r is X[order[r, k*batch:(k+1)*batch]], gathered for all
    R replicas by one ``take`` of the batch's R m indices (see :func:`_batch_major`)."""
    n = X.shape[0]
    bounds = batch_bounds(n, batch) if bounds is None else bounds
    if is_streamed(X, xp) or is_streamed(Y, xp):
        labels = xp.int64 if Y.dtype.kind in "iu" else like.dtype
        yield from host_batches(
            (X, Y), order, batch, xp=xp, device=device(like), dtypes=(like.dtype, labels),
            bounds=bounds,
        )  # fmt: skip
        return
    if order is None:
        for start, stop in bounds:
            yield (X, Y) if stop - start == n else (X[start:stop, ...], Y[start:stop, ...])
        return
    lead = tuple(order.shape[:-1])  # () for one permutation, (R,) for R replicas
    r = math.prod(lead)
    indices = xp.asarray(_batch_major(order, batch), device=device(X))  # one copy per epoch
    x_buf = xp.empty((r * batch, *X.shape[1:]), dtype=X.dtype, device=device(X))
    y_buf = xp.empty((r * batch, *Y.shape[1:]), dtype=Y.dtype, device=device(Y))
    for start, stop in bounds:
        idx, m = indices[r * start : r * stop], stop - start
        xb = take_rows(X, idx, xp=xp, out=x_buf[: r * m, ...])
        yb = take_rows(Y, idx, xp=xp, out=y_buf[: r * m, ...])
        if lead:
            xb = xp.reshape(xb, (*lead, m, *X.shape[1:]))
            yb = xp.reshape(yb, (*lead, m, *Y.shape[1:]))
        yield xb, yb


def _batch_major(order, batch: int):
    """The host index vector whose slice [R start : R stop] holds batch (start, stop) of
    every replica, replica after replica: ``order`` (n,) as it is; ``order`` (R, n) as
    concat over batches k of order[:, k-th batch's columns] in row-major order."""
    if order.ndim == 1:
        return order
    hp = array_namespace(order)
    r, n = order.shape
    full = n - n % batch
    head = hp.reshape(
        hp.permute_dims(hp.reshape(order[:, :full], (r, -1, batch)), (1, 0, 2)), (-1,)
    )
    return hp.concat([head, hp.reshape(order[:, full:], (-1,))])


def _weighted_total(losses, bounds, n: int, loss_name: str, like, /, *, xp):
    """sum_b C_b n_b / N over the batches' losses (sum_b C_b for ``sse``, a sum over
    samples), per replica for (R,) losses; a single batch of all N rows has its loss
    returned as it is. Under a communicator, C_b and n_b are a rank's part of batch b (no
    part: 0)."""
    if len(losses) == 1 and bounds[0][1] - bounds[0][0] == n:
        return losses[0]
    if not losses:
        return xp.zeros((), dtype=like.dtype, device=device(like))
    if loss_name == "sse":
        weights = [1.0] * len(losses)
    else:
        weights = [(stop - start) / n for start, stop in bounds]
    w = xp.asarray(weights, dtype=like.dtype, device=device(like))
    return xp.sum(xp.stack(losses, axis=-1) * w, axis=-1)


def _summed(values: dict, comm) -> dict:
    """``values`` (0-d device arrays), summed over the ranks of ``comm`` when given."""
    return values if comm is None else comm.sum_arrays(values, like=values)


def run_epoch(
    net, params, state, X, Y, optimizer, *, batch_size=None, order=None, xp=None, comm=None,
    rng=None, clip=None,
):  # fmt: skip
    """One pass over (X, Y) in batches of ``batch_size`` (all rows when None), in row order
    or, when ``order`` (a host permutation of the rows) is given, batch k being the rows
    ``order[k*batch_size:(k+1)*batch_size]``. Returns ``(params, state, epoch_loss)``, the
    loss a 0-d device array ((R,) for replicas). No value is read back to the host here.

    ``X``, ``Y`` on the parameters' device (``Y`` as from ``net.prepare_targets`` or
    labels), or host NumPy arrays to stream (see the module docstring). ``rng``: the host
    generator(s) of the steps' dropout masks, for a network that draws any.

    With a communicator ``comm`` (:mod:`backends.comm`), every rank passes the same
    ``order`` and computes the gradient g_r of its part (n_r of the batch's n_b rows, see
    :func:`backends.transfer.batch_bounds`); the model's gradient being the mean over
    rows (a sum for ``sse``), sum_r (n_r / n_b) g_r (sum_r g_r) is the batch's gradient,
    formed by one allreduce, and every rank makes the same step.

    ``clip`` (a number, or one per replica): the gradients of each step are scaled by
    min(1, clip / ||g||), ||g|| their global norm (:func:`model.optimizers.clip_global_norm`).

    An optimizer with a line search (``line_search``, :class:`model.lbfgs.LBFGS`) makes
    one step of the whole data instead, given the closure of its loss and gradients
    (:func:`_closure`)."""
    like = next(iter(params.values()))
    xp = xp or array_namespace(like)
    if getattr(optimizer, "line_search", False):
        closure = _closure(net, X, Y, like, xp=xp, comm=comm)
        params, state, loss, renewed = optimizer.minimize_step(
            closure, params, state, decay=net.decayed, xp=xp
        )
        _renew(params, renewed, optimizer)
        return params, state, loss
    stacked = _stacked(net, like)
    n = X.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    bounds = batch_bounds(n, batch)
    parts = bounds if comm is None else batch_bounds(n, batch, comm.rank, comm.size)
    mine = [(a, b) for a, b in parts if b > a]
    rows = _batches(X, Y, order, batch, like, xp=xp, bounds=mine)
    inplace = writes_in_place(xp)
    scale = optimizer.grad_scale
    stochastic, renews, decay = net.stochastic, bool(net.stateful), net.decayed
    losses = []
    for (start, stop), (a, b) in zip(bounds, parts, strict=True):
        noise = Noise(rng, stop - start, (a - start, b - start)) if stochastic else None
        grads, renewed = None, {}
        if b > a:
            xb, yb = next(rows)
            if yb.ndim != 2 or yb.dtype != like.dtype:  # streamed labels: prepared per batch
                yb = net.prepare_targets(yb, dtype=like.dtype, xp=xp)
            _, cache = net.forward(params, xb, train=True, noise=noise, inplace=inplace, xp=xp)
            losses.append(net.loss_from_cache(cache, yb, xp=xp, inplace=inplace))
            grads = net.backward(params, cache, yb, scale=scale, inplace=inplace, xp=xp)
            if renews:
                renewed = net.new_state(cache)
        elif noise is not None:
            net.skip_noise(noise)  # the same draws as the ranks that have rows
        if comm is not None:
            weight = 1.0 if net.loss == "sse" else (b - a) / (stop - start)
            grads = comm.sum_arrays(grads, like=_trained(net, params), weight=weight)
        if clip is not None and grads is not None:
            grads = clip_global_norm(grads, clip, scale, stacked=stacked, xp=xp)
        params, state = optimizer.update(params, grads, state, decay=decay, scale=scale, xp=xp)
        if renewed:
            _renew(params, renewed, optimizer)
    loss = _weighted_total(losses, mine, n, net.loss, like, xp=xp)
    return params, state, _summed({"loss": loss}, comm)["loss"]


def _renew(params: dict, renewed: dict, optimizer) -> None:
    """Store the state parameters a training pass renewed (a held replica's kept)."""
    if renewed:
        params.update(optimizer.renew(params, renewed) if hasattr(optimizer, "renew") else renewed)


def _stacked(net, like) -> bool:
    """Whether ``like`` (the first parameter) carries a leading replica axis."""
    first = next(iter(net.specs.values()))
    return like.ndim > len(first.shape)


def _closure(net, X, Y, like, /, *, xp, comm):
    """``closure(params) -> (C, grads, renewed)`` over all rows of (X, Y) in training mode:
    the loss (0-d, (R,) for replicas), its gradients and the renewed state parameters.
    Under ``comm``, each rank takes its contiguous part of the rows and the loss and
    gradients are summed over the ranks with weights n_r / n (1 for ``sse``), as one
    batch of :func:`run_epoch`."""
    n = X.shape[0]
    bounds = batch_bounds(n, n, 0 if comm is None else comm.rank, 1 if comm is None else comm.size)
    (a, b) = bounds[0]
    inplace = writes_in_place(xp)

    def closure(params):
        losses, grads, renewed = [], None, {}
        if b > a:
            ((xb, yb),) = _batches(X, Y, None, n, like, xp=xp, bounds=[(a, b)])
            yb = net.prepare_targets(yb, dtype=like.dtype, xp=xp)
            _, cache = net.forward(params, xb, train=True, inplace=inplace, xp=xp)
            losses.append(net.loss_from_cache(cache, yb, xp=xp))
            grads = net.backward(params, cache, yb, inplace=inplace, xp=xp)
            renewed = net.new_state(cache)
        loss = _weighted_total(losses, [(a, b)] if b > a else [], n, net.loss, like, xp=xp)
        if comm is None:
            return loss, grads, renewed
        weight = 1.0 if net.loss == "sse" else (b - a) / n
        grads = comm.sum_arrays(grads, like=_trained(net, params), weight=weight)
        loss = _summed({"loss": loss}, comm)["loss"]
        copy = {k: xp.asarray(v, copy=True) for k, v in grads.items()}  # views of a buffer
        return xp.asarray(loss, copy=True), copy, renewed

    return closure


def _trained(net, params) -> dict:
    return {k: params[k] for k in net.trained}


def evaluate(net, params, X, Y, /, *, xp=None, comm=None) -> dict:
    """Loss and, for classifiers, accuracy (multi-label: subset accuracy, every label of
    a row right, and ``label_accuracy``, per label) or, for regression, ``r2`` on (X, Y)
    as host floats (lists for replicas); (X, Y) checked as :func:`fit` checks them.

    Works in chunks of :data:`EVAL_ROWS` rows (the loss of a mean loss is the row-weighted
    mean of the chunks' losses), so it also takes streamed host data. With ``comm``, each
    rank scores its contiguous share of the rows and the sums are allreduced."""
    param_layout(net, params)
    check_inputs(net, params, X, Y)
    totals = scores(net, params, X, Y, xp=xp, comm=comm)
    xp = array_namespace(totals["loss"])
    host = (to_numpy(xp.stack(list(totals.values()))) + 0.0).tolist()  # -0.0 (all p = 1): 0.0
    out = {"loss": host[0]}
    if net.is_classifier:
        hits = host[1]
        out["accuracy"] = (
            [h / X.shape[0] for h in hits] if isinstance(hits, list) else hits / X.shape[0]
        )
    if net.multi_label:
        out["label_accuracy"] = label_accuracy(net, params, X, Y, xp=xp, comm=comm)
    elif not net.is_classifier:
        out["r2"] = r2_score(net, params, X, Y, xp=xp, comm=comm)
    return out


def _chunks(n: int, comm) -> list:
    """(start, stop) of the blocks of at most EVAL_ROWS rows this rank scores."""
    lo, hi = (0, n) if comm is None else batch_bounds(n, n, comm.rank, comm.size)[0]
    return [(s, min(s + EVAL_ROWS, hi)) for s in range(lo, hi, EVAL_ROWS)]


def _column_totals(net, params, X, Y, terms, /, *, xp, comm) -> dict:
    """{name: sum over the rows of term(out, y)} for each ``terms[name] = (term,
    uses_out)``: term of a block's output (evaluation mode; None unless ``uses_out``) and
    prepared targets, summed over axis -2 into (K,) (per replica (R, K) where it uses the
    output) device arrays, summed over the ranks."""
    like = next(iter(params.values()))
    lead = tuple(like.shape[:1]) if _stacked(net, like) else ()
    totals = {
        name: xp.zeros((*(lead if uses else ()), net.n_outputs), dtype=like.dtype,
                       device=device(like))
        for name, (_, uses) in terms.items()
    }  # fmt: skip
    forward = any(uses for _, uses in terms.values())
    for xb, yb in _batches(X, Y, None, EVAL_ROWS, like, xp=xp, bounds=_chunks(X.shape[0], comm)):
        y = net.prepare_targets(yb, dtype=like.dtype, xp=xp)
        out = net.forward(params, xb, xp=xp)[0] if forward else None
        for name, (term, _) in terms.items():
            totals[name] = totals[name] + xp.sum(term(out, y), axis=-2)
    return _summed(totals, comm)


def _host_rows(value) -> list:
    """A (K,) or (R, K) device array as host lists."""
    return (to_numpy(value) + 0.0).tolist()


def label_accuracy(net, params, X, Y, /, *, xp=None, comm=None) -> list:
    """Multi-label: per label (per replica) the fraction of rows whose label is predicted
    right, as host floats."""
    xp = xp or array_namespace(next(iter(params.values())))

    def right(out, y):
        return xp.astype(net.classes_of(out, xp=xp) == xp.astype(y, xp.int64), out.dtype)

    total = _column_totals(net, params, X, Y, {"right": (right, True)}, xp=xp, comm=comm)
    return _host_rows(total["right"] / X.shape[0])


def r2_score(net, params, X, Y, /, *, xp=None, comm=None):
    """R^2 = mean over the outputs k of 1 - SS_res,k / SS_tot,k (scikit-learn's r2_score,
    multioutput "uniform_average"; an output with SS_tot = 0 scores 1 when fitted
    exactly, else 0), SS_res,k = sum_i (y_hat_ik - y_ik)^2, SS_tot,k = sum_i (y_ik -
    mean_k)^2: two passes, the first for the means. A host float, or one per replica."""
    xp = xp or array_namespace(next(iter(params.values())))
    n = X.shape[0]
    first = {"y": (lambda out, y: y, False)}
    mean = _column_totals(net, params, X, Y, first, xp=xp, comm=comm)["y"] / n
    terms = {
        "res": (lambda out, y: (out - y) ** 2, True),
        "tot": (lambda out, y: (y - mean) ** 2, False),
    }
    sums = _column_totals(net, params, X, Y, terms, xp=xp, comm=comm)
    res, tot = (np.asarray(_host_rows(sums[k])) for k in ("res", "tot"))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(tot > 0, 1.0 - res / np.where(tot > 0, tot, 1.0), (res == 0) * 1.0)
    r2 = np.mean(score, axis=-1)
    return r2.tolist() if r2.ndim else float(r2)


def scores(net, params, X, Y, /, *, xp=None, comm=None) -> dict:
    """The loss on (X, Y) (evaluation mode) and, for classifiers, ``hits`` (the number of
    rows classified right; multi-label: with every label right) as device arrays: 0-d,
    or (R,) (one per replica) for replica-stacked parameters; summed over the ranks of
    ``comm``. Nothing is read back."""
    like = next(iter(params.values()))
    xp = xp or array_namespace(like)
    n = X.shape[0]
    batch = min(EVAL_ROWS, n)
    lo, hi = (0, n) if comm is None else batch_bounds(n, n, comm.rank, comm.size)[0]
    bounds = [(s, min(s + batch, hi)) for s in range(lo, hi, batch)]
    losses, hits = [], []
    for xb, yb in _batches(X, Y, None, batch, like, xp=xp, bounds=bounds):
        out, cache = net.forward(params, xb, xp=xp)
        losses.append(net.loss_from_cache(cache, yb, xp=xp))
        if net.is_classifier:
            hits.append(xp.sum(_hits(net, out, yb, xp), axis=-1))
    totals = {"loss": _weighted_total(losses, bounds, n, net.loss, like, xp=xp)}
    if net.is_classifier:
        zero = xp.zeros((), dtype=like.dtype, device=device(like))  # a rank with no rows
        totals["hits"] = xp.sum(xp.stack(hits, axis=-1), axis=-1) if hits else zero
    return _summed(totals, comm)


def _hits(net, out, yb, xp):
    """Per row 1 where the predicted class is right (multi-label: every label), else 0,
    in the output's dtype; ``yb`` labels, or prepared targets."""
    predicted = net.classes_of(out, xp=xp)
    if net.multi_label:
        wrong = xp.any(predicted != xp.astype(yb, xp.int64), axis=-1)
        return xp.astype(xp.logical_not(wrong), out.dtype)
    labels = yb if yb.ndim == 1 else xp.reshape(yb, (-1,))
    if net.loss == "cross_entropy" and yb.ndim == out.ndim:  # one-hot rows
        labels = xp.argmax(yb, axis=-1)
    return xp.astype(predicted == xp.astype(labels, xp.int64), out.dtype)


def _largest_product(net, batch: int) -> int:
    """Multiply-adds of the step's largest matrix product: batch x fan_in x fan_out."""
    return batch * max(a * b for a, b in itertools.pairwise(net.sizes))


def _epoch_values(net, params, loss, validation, stacked: bool, /, *, xp, comm):
    """(k,) or (k, R) device array of the epoch's values: where(finite, C, NaN) (finite:
    the loss and every parameter of that network) and the validation scores (loss, hits)
    when given; and their names, in the same order."""
    finite = xp.isfinite(loss)
    for p in params.values():
        axes = tuple(range(1 if stacked else 0, p.ndim))
        finite = xp.logical_and(finite, xp.all(xp.isfinite(p), axis=axes))
    rows, names = [xp.where(finite, loss, math.nan)], ["loss"]
    if validation is not None:
        for name, value in scores(net, params, *validation, xp=xp, comm=comm).items():
            rows.append(xp.astype(value, loss.dtype))
            names.append(f"val_{name}")
    return xp.stack(rows), names


def _end_epoch(net, params, loss, validation, freezer, epoch, divergence, lrs, /, *, xp,
               comm):  # fmt: skip
    """The epoch's records, from its one read-back (:func:`_epoch_values`), each with its
    network's learning rate ``lrs[r]``; a network that diverged in it raises
    DivergenceError under the "raise" policy."""
    values, names = _epoch_values(
        net, params, loss, validation, not freezer.single, xp=xp, comm=comm
    )
    host = (to_numpy(values) + 0.0).tolist()  # -0.0 (a perfect fit) reads 0.0
    records = freezer.records(epoch, host, names, validation, lrs)
    if any(freezer.newly) and divergence == "raise":
        first = freezer.newly.index(True)
        value = host[0] if freezer.single else host[0][first]
        raise DivergenceError(epoch + 1, value, getattr(freezer.base, "lr", None))
    return records


def _generators(rng, count: int | None, needed: bool):
    """The host generator(s) the fit draws from: one, or one per replica (each seeded 0
    by default, as one network's fit)."""
    if count is None:
        if rng is not None and not hasattr(rng, "permutation"):
            raise ConfigError(
                f"rng must be a numpy.random.Generator (backends.host_rng(seed)), got "
                f"{type(rng).__name__}",
                setting="seed",
            )
        return host_rng(0) if rng is None and needed else rng
    rngs = [host_rng(0) for _ in range(count)] if rng is None else rng
    if not isinstance(rngs, list | tuple) or len(rngs) != count:
        got = f"{len(rngs)} random generators" if isinstance(rngs, list | tuple) else "one"
        raise ConfigError(
            f"{got} given for {count} replicas; pass one generator per replica (rng=[...])"
        )
    return list(rngs)


def _check_batches(net, n: int, batch: int, comm) -> None:
    """A network with batch statistics needs at least 2 rows in every batch's part."""
    if not net.batch_statistics:
        return
    if comm is not None and comm.size > 1:
        raise ConfigError(
            "batch normalization under several ranks would normalize each rank's part of "
            "a batch by its own statistics and diverge from one process; use layer "
            "normalization, or train in one process",
            setting="norm",
        )
    if min(stop - start for start, stop in batch_bounds(n, batch)) < 2:
        raise ConfigError(
            f"batch normalization needs at least 2 rows in every batch, but {n} rows in "
            f"batches of {batch} leave one of 1 row; choose another batch size",
            setting="batch_size",
        )


def _check_optimizer(optimizer) -> None:
    """An optimizer object: what :func:`model.optimizers.make_optimizer` returns."""
    if all(hasattr(optimizer, a) for a in ("init", "update", "grad_scale")):
        return
    make = f"make_optimizer({optimizer!r})" if isinstance(optimizer, str) else (
        "make_optimizer('adam')")  # fmt: skip
    raise ConfigError(
        f"optimizer must be an optimizer object, got {type(optimizer).__name__} "
        f"{optimizer!r}; make one with model.optimizers.{make} (or SGD(lr), Adam(lr))",
        setting="optimizer",
    )


def _check_fit(net, params, X, Y, validation, epochs, batch_size, start_epoch, divergence,
               comm, optimizer) -> int | None:  # fmt: skip
    """Everything :func:`fit` is given, checked before it trains; the replica count (None
    for one network)."""
    check_schedule(epochs, batch_size, start_epoch)
    _check_optimizer(optimizer)
    if divergence not in DIVERGENCE:
        raise ConfigError(f"divergence must be one of {DIVERGENCE}, got {divergence!r}")
    count = param_layout(net, params)
    streamed = check_inputs(net, params, X, Y)
    if validation is not None:
        streamed |= check_inputs(net, params, *validation, names=("X_val", "Y_val"))
    if count is not None and streamed:
        raise ConfigError(
            "replicas train on data held on the parameters' device, not streamed from host "
            "NumPy data; move it with backend.asarray"
        )
    n = X.shape[0]
    _check_batches(net, n, n if batch_size is None else min(batch_size, n), comm)
    return count


def fit(
    net,
    params: dict,
    X,
    Y,
    *,
    optimizer,
    epochs: int,
    batch_size: int | None = None,
    rng=None,
    state: dict | None = None,
    validation: tuple | None = None,
    start_epoch: int = 0,
    callback: Callable | None = None,
    comm=None,
    divergence: str = "raise",
    diverged: list | None = None,
    schedule: Schedule | Sequence | None = None,
    early_stopping: EarlyStopping | Sequence | None = None,
    clip_grad: float | Sequence | None = None,
    history: dict | list | None = None,
) -> FitResult:
    """Train ``params`` (updated in the dict) for epochs ``start_epoch .. epochs - 1``.

    ``params``: one network's (``net.init_params``) or R replicas' stacked along a leading
    axis (:func:`model.replicas.init_replicas`); replica r then trains exactly as one fit
    of ``replica(params, r)`` with ``rng[r]`` and lr[r], lambda[r] of ``optimizer`` (see
    :func:`model.replicas.per_replica`).

    ``batch_size=None`` is full-batch gradient descent (no shuffling). Otherwise rows are
    shuffled every epoch by ``rng`` (a host ``numpy.random.Generator``, or a list of one
    per replica; default seed 0; one ``permutation(n)`` per epoch, then each step's dropout
    masks), so the same seed gives the same batches on every backend. ``X``, ``Y`` (and
    ``validation=(X_val, Y_val)``) are on the parameters' device, or host NumPy arrays to
    stream, memmaps included (one network only; see the module docstring). ``state``
    resumes an optimizer. ``validation`` adds ``val_loss`` (and ``val_accuracy`` for
    classifiers) to the history, and every epoch records its learning rate ``lr``.
    ``callback(epoch, params, state, record)`` runs after each epoch, ``record`` being
    that epoch's host floats (for replicas a list of R records, None for a diverged or
    stopped replica).

    An optimizer with a line search (:class:`model.lbfgs.LBFGS`) makes one whole-data
    iteration per epoch (no batch size, no dropout, no schedule, no clipping).

    ``schedule`` (:class:`model.schedules.Schedule`, or one per replica) sets each epoch's
    learning rate; ``early_stopping`` (:class:`model.schedules.EarlyStopping`, or one per
    replica) stops a network whose monitored loss (``val_loss`` with a validation set,
    else ``loss``) stopped improving, and returns it at its best epoch's parameters (kept
    on the device in ``state["best"]``); ``clip_grad`` (a number, or one per replica, None
    for none) clips each step's gradients to that global norm. ``history``: the earlier
    epochs' history (as a FitResult holds it), which a plateau schedule and early stopping
    continue from when ``start_epoch`` > 0.

    ``divergence``: ``"raise"`` (default) or ``"freeze"`` (see the module docstring);
    ``diverged`` (from an earlier result) keeps those replicas frozen. Training stops
    early when every network has diverged or stopped.

    ``comm`` (a :class:`backends.comm.Communicator`) trains data-parallel: rank 0's
    parameters are broadcast first; every rank passes the same data, draws the same
    permutations and computes its part of every batch (:func:`run_epoch`); losses and
    metrics are summed over the ranks, so every rank records the same history.
    """
    count = _check_fit(net, params, X, Y, validation, epochs, batch_size, start_epoch,
                       divergence, comm, optimizer)  # fmt: skip
    like = next(iter(params.values()))
    xp = array_namespace(like)
    n = X.shape[0]
    control, clip = _controls(
        net,
        optimizer,
        like,
        count,
        n,
        batch_size,
        schedule,
        early_stopping,
        clip_grad,
        history,
        validation,
        start_epoch,
    )
    batch = n if batch_size is None else min(batch_size, n)
    targets = Y if is_streamed(Y, xp) else net.prepare_targets(Y, dtype=like.dtype, xp=xp)
    state = optimizer.init(_trained(net, params)) if state is None else state
    shuffle = batch < n
    rng = _generators(rng, count, shuffle or net.stochastic)
    if comm is not None:
        comm.broadcast_arrays(params)
    state = _best_state(control, params, state)
    part = -(-batch // (1 if comm is None else comm.size))  # a rank's rows of a batch
    threads = blas_threads(_largest_product(net, part)) if is_numpy_namespace(xp) else None
    freezer = Freezer(optimizer, params, state, count, diverged, keep=divergence == "freeze")
    freezer.stop(control.stopped, params)
    with limit_blas(threads):
        for epoch in range(start_epoch, epochs):
            if freezer.all_held:
                break
            freezer.remember(params)
            freezer.use(control.optimizer(optimizer, epoch, like))
            order = None
            if shuffle:
                order = rng.permutation(n) if count is None else _stacked_orders(rng, n)
            params, state, loss = run_epoch(
                net, params, state, X, targets, freezer.optimizer, batch_size=batch_size,
                order=order, xp=xp, comm=comm, rng=rng, clip=clip,
            )  # fmt: skip
            records = _end_epoch(net, params, loss, validation, freezer, epoch, divergence,
                                 control.lrs(epoch), xp=xp, comm=comm)  # fmt: skip
            state = freezer.freeze(params, state, xp=xp)
            _observe(control, freezer, records, params, state)
            if callback is not None and (count is not None or records[0] is not None):
                callback(epoch, params, state, records if count is not None else records[0])
    return _result(control, freezer, params, state, count)


def _controls(net, optimizer, like, count, n, batch_size, schedule, early_stopping, clip_grad,
              history, validation, start_epoch):  # fmt: skip
    """fit's schedules and early stopping (:class:`model.schedules.Control`) and the
    clipping norm (None, a number, or an (R,) array), checked with the optimizer."""
    monitor = "val_loss" if validation is not None else "loss"
    control = Control(optimizer, count, schedule, early_stopping, history, monitor)
    clip = _clip_norms(clip_grad, count, like)
    if getattr(optimizer, "line_search", False):
        _check_line_search(net, n, batch_size, control, clip)
    lengths = {len(v) for v in control.monitored}
    short = count is None and lengths != {start_epoch}
    if control.needs_history and (short or max(lengths) > start_epoch):
        raise ConfigError(
            f"a plateau schedule and early stopping continue from the monitored losses "
            f"({monitor}) of the {start_epoch} earlier epochs; pass their history "
            f"(history=, as a FitResult holds it), which has {max(lengths)}",
            setting="history",
        )
    return control, clip


def _check_line_search(net, n: int, batch_size, control, clip) -> None:
    """What an optimizer with a line search refuses: minibatches, dropout, a schedule,
    clipping (its steps come from the whole data's loss and gradient, as they are)."""
    problems = [
        (batch_size is not None and batch_size < n, "batch_size",
         "it steps on the whole data; leave the batch size unset"),
        (net.stochastic, "dropout",
         "its line search needs the same loss at every evaluation; train without dropout"),
        (control.scheduled, "schedule",
         "its line search chooses every step's length; use the constant schedule"),
        (clip is not None, "clip_grad",
         "its line search needs the true gradient; leave clipping off"),
    ]  # fmt: skip
    for bad, setting, why in problems:
        if bad:
            raise ConfigError(f"L-BFGS takes no {setting.replace('_', ' ')}: {why}",
                              setting=setting)  # fmt: skip


def _clip_norms(clip_grad, count, like):
    """The clipping norm as run_epoch takes it: None (no clipping), a number, or for
    replicas with different norms an (R,) array (inf where a replica has none)."""
    if clip_grad is None:
        return None
    if count is None or isinstance(clip_grad, int | float):
        return check_number("clip_grad", clip_grad, low=0, low_open=True)
    values = list(clip_grad) if isinstance(clip_grad, Sequence) else None
    if values is None or len(values) != count:
        raise ConfigError(
            f"clip_grad must be a number, None, or one of those per replica ({count}), got "
            f"{clip_grad!r:.80}",
            setting="clip_grad",
        )
    norms = [math.inf if v is None else check_number("clip_grad", v, low=0, low_open=True)
             for v in values]  # fmt: skip
    if all(v == math.inf for v in norms):
        return None
    if len(set(norms)) == 1:
        return norms[0]
    xp = array_namespace(like)
    return xp.asarray(norms, dtype=like.dtype, device=device(like))


def _observe(control, freezer, records, params, state) -> None:
    """The epoch's records taken into account (a plateau schedule reads them), and early
    stopping's part: the best parameters kept, the stopped held."""
    improved = control.observe(records)
    if not control.stopping:
        return
    if any(improved):
        _keep_best(state, params, improved, freezer.single)
    freezer.stop(control.stopped, params)


def _best_state(control, params, state) -> dict:
    """``state`` with the early-stopping copy of the best parameters (``best``): the
    current ones when training starts."""
    if not control.stopping or "best" in state:
        return state
    if any(control.monitored):
        raise ConfigError(
            "early stopping continues from earlier epochs only with their best parameters: "
            "pass the state of the fit that trained them (its state['best'])",
            setting="early_stopping",
        )
    return {**state, "best": {k: array_namespace(p).asarray(p, copy=True)
                              for k, p in params.items()}}  # fmt: skip


def _keep_best(state, params, improved: list, single: bool) -> None:
    """state["best"] <- the parameters of the networks whose epoch is their new best."""
    best = state["best"]
    for k, p in params.items():
        xp = array_namespace(p)
        if single:
            best[k] = xp.asarray(p, copy=True)
        else:
            mask = xp.asarray(improved, device=device(p))
            best[k] = xp.where(replica_scale(mask, p, xp), p, best[k])


def _result(control, freezer, params, state, count) -> FitResult:
    """The FitResult; with early stopping the networks put back at their best epochs."""
    history, diverged = freezer.result()
    if not control.stopping:
        return FitResult(params, state, history, diverged)
    last = {k: array_namespace(p).asarray(p, copy=True) for k, p in params.items()}
    best_epochs = control.best_epochs()
    restore = [b is not None and s is not None for b, s in zip(best_epochs, control.stoppers,
                                                                  strict=True)]  # fmt: skip
    best = state["best"]
    for k, p in params.items():
        xp = array_namespace(p)
        if count is None:
            params[k] = best[k] if restore[0] else p
        else:
            mask = xp.asarray(restore, device=device(p))
            params[k] = xp.where(replica_scale(mask, p, xp), best[k], p)
    stopped = control.stopped
    if count is None:
        return FitResult(params, state, history, diverged, best_epochs[0], stopped[0], last)
    return FitResult(params, state, history, diverged, best_epochs, stopped, last)


def _stacked_orders(rngs, n: int):
    """One host permutation of the rows per replica, as one (R, n) host array."""
    orders = [g.permutation(n) for g in rngs]
    return array_namespace(orders[0]).stack(orders)
