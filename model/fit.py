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
from collections.abc import Callable

from array_api_compat import array_namespace, device, is_numpy_namespace

from backends import ConfigError, HandgradError, host_rng
from backends.blas import blas_threads, limit_blas
from backends.transfer import batch_bounds, host_batches, is_streamed, take_rows, to_numpy
from model.checks import EVAL_ROWS, check_inputs, check_schedule, param_layout
from model.layers import Noise
from model.replicas import Freezer
from model.variants import writes_in_place

__all__ = [
    "DIVERGENCE",
    "EVAL_ROWS",
    "DivergenceError",
    "FitResult",
    "evaluate",
    "fit",
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
    diverged in, or None."""

    params: dict
    state: dict
    history: dict | list
    diverged: list | None = None


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
    rng=None,
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
    formed by one allreduce, and every rank makes the same step."""
    like = next(iter(params.values()))
    xp = xp or array_namespace(like)
    n = X.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    bounds = batch_bounds(n, batch)
    parts = bounds if comm is None else batch_bounds(n, batch, comm.rank, comm.size)
    mine = [(a, b) for a, b in parts if b > a]
    rows = _batches(X, Y, order, batch, like, xp=xp, bounds=mine)
    inplace = writes_in_place(xp)
    scale = optimizer.grad_scale
    losses = []
    for (start, stop), (a, b) in zip(bounds, parts, strict=True):
        noise = Noise(rng, stop - start, (a - start, b - start)) if net.stochastic else None
        grads, renewed = None, {}
        if b > a:
            xb, yb = next(rows)
            yb = net.prepare_targets(yb, dtype=like.dtype, xp=xp)  # no-op when prepared
            _, cache = net.forward(params, xb, train=True, noise=noise, inplace=inplace, xp=xp)
            losses.append(net.loss_from_cache(cache, yb, xp=xp, inplace=inplace))
            grads = net.backward(params, cache, yb, scale=scale, inplace=inplace, xp=xp)
            renewed = net.new_state(cache)
        elif noise is not None:
            net.skip_noise(noise)  # the same draws as the ranks that have rows
        if comm is not None:
            weight = 1.0 if net.loss == "sse" else (b - a) / (stop - start)
            grads = comm.sum_arrays(grads, like=_trained(net, params), weight=weight)
        params, state = optimizer.update(
            params, grads, state, decay=net.decayed, scale=scale, xp=xp
        )
        if renewed:
            params.update(
                optimizer.renew(params, renewed) if hasattr(optimizer, "renew") else renewed
            )
    loss = _weighted_total(losses, mine, n, net.loss, like, xp=xp)
    return params, state, _summed({"loss": loss}, comm)["loss"]


def _trained(net, params) -> dict:
    return {k: params[k] for k in net.trained}


def evaluate(net, params, X, Y, /, *, xp=None, comm=None) -> dict:
    """Loss and, for classifiers, accuracy on (X, Y) as host floats (lists for replicas),
    from one read-back; (X, Y) checked as :func:`fit` checks them.

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
    return out


def scores(net, params, X, Y, /, *, xp=None, comm=None) -> dict:
    """The loss on (X, Y) (evaluation mode) and, for classifiers, ``hits`` (the number of
    rows classified right) as device arrays: 0-d, or (R,) (one per replica) for
    replica-stacked parameters; summed over the ranks of ``comm``. Nothing is read back."""
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
            labels = yb if yb.ndim == 1 else xp.reshape(yb, (-1,))
            predicted = _classes(net, out, xp)
            hit = predicted == xp.astype(labels, xp.int64)
            hits.append(xp.sum(xp.astype(hit, like.dtype), axis=-1))
    totals = {"loss": _weighted_total(losses, bounds, n, net.loss, like, xp=xp)}
    if net.is_classifier:
        zero = xp.zeros((), dtype=like.dtype, device=device(like))  # a rank with no rows
        totals["hits"] = xp.sum(xp.stack(hits, axis=-1), axis=-1) if hits else zero
    return _summed(totals, comm)


def _classes(net, out, xp):
    """Predicted class indices from the network's output (as ``predict_class``)."""
    if net.loss == "cross_entropy":
        return xp.argmax(out, axis=-1)
    return xp.astype(out[..., 0] > 0.5, xp.int64)


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


def _end_epoch(net, params, loss, validation, freezer, epoch, divergence, /, *, xp, comm):
    """The epoch's records, from its one read-back (:func:`_epoch_values`); a network
    that diverged in it raises DivergenceError under the "raise" policy."""
    values, names = _epoch_values(
        net, params, loss, validation, not freezer.single, xp=xp, comm=comm
    )
    host = (to_numpy(values) + 0.0).tolist()  # -0.0 (a perfect fit) reads 0.0
    records = freezer.records(epoch, host, names, validation)
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
    classifiers) to the history. ``callback(epoch, params, state, record)`` runs after
    each epoch, ``record`` being that epoch's host floats (for replicas a list of R
    records, None for a diverged replica).

    ``divergence``: ``"raise"`` (default) or ``"freeze"`` (see the module docstring);
    ``diverged`` (from an earlier result) keeps those replicas frozen. Training stops
    early when every network has diverged.

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
    batch = n if batch_size is None else min(batch_size, n)
    targets = Y if is_streamed(Y, xp) else net.prepare_targets(Y, dtype=like.dtype, xp=xp)
    state = optimizer.init(_trained(net, params)) if state is None else state
    shuffle = batch < n
    rng = _generators(rng, count, shuffle or net.stochastic)
    if comm is not None:
        comm.broadcast_arrays(params)
    part = -(-batch // (1 if comm is None else comm.size))  # a rank's rows of a batch
    threads = blas_threads(_largest_product(net, part)) if is_numpy_namespace(xp) else None
    freezer = Freezer(optimizer, params, state, count, diverged, keep=divergence == "freeze")
    with limit_blas(threads):
        for epoch in range(start_epoch, epochs):
            if freezer.all_diverged:
                break
            freezer.remember(params)
            order = None
            if shuffle:
                order = rng.permutation(n) if count is None else _stacked_orders(rng, n)
            params, state, loss = run_epoch(
                net, params, state, X, targets, freezer.optimizer, batch_size=batch_size,
                order=order, xp=xp, comm=comm, rng=rng,
            )  # fmt: skip
            records = _end_epoch(net, params, loss, validation, freezer, epoch, divergence,
                                 xp=xp, comm=comm)  # fmt: skip
            state = freezer.freeze(params, state, xp=xp)
            if callback is not None and (count is not None or records[0] is not None):
                callback(epoch, params, state, records if count is not None else records[0])
    return FitResult(params, state, *freezer.result())


def _stacked_orders(rngs, n: int):
    """One host permutation of the rows per replica, as one (R, n) host array."""
    orders = [g.permutation(n) for g in rngs]
    return array_namespace(orders[0]).stack(orders)
