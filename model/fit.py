"""The training loop: epochs of (shuffled) minibatches, history read back once per epoch.

One epoch: draw a permutation of the rows on the host (when batching), then for each batch
gather that batch's rows (``xp.take`` of its indices, into one reused buffer where the
namespace allows) and run ``forward -> backward -> update``. No shuffled copy of the data
is made, and data already on the parameters' device with their dtype is used as it is.
Host NumPy data with parameters elsewhere (CuPy, array-api-strict), and memory-mapped
files on any backend (:func:`model.streaming.open_memmap`), are streamed: each batch is
gathered on the host and copied to the device, double-buffered on CuPy
(:func:`backends.transfer.host_batches`).

The epoch's loss is accumulated on the device as sum_b C_b * n_b / N for mean losses
(sum_b C_b for ``sse``), each C_b taken at the parameters before that batch's step
(scikit-learn's ``loss_curve_`` convention). At the end of the epoch it is combined on the
device with "every parameter is finite" into one value, ``where(all finite, loss, NaN)``,
read back once together with the validation metrics. A non-finite value stops the fit
with :class:`DivergenceError` before the epoch counts as done.

On NumPy, the fit runs with the BLAS threads :func:`backends.blas.blas_threads` picks for
the step's largest matrix product (one thread for small ones; see that module), and a
single network without a communicator takes the in-place step of :mod:`model.fast` (the
same math as forward -> backward -> update, with less overhead per call).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from array_api_compat import array_namespace, device, is_numpy_namespace

from backends import ConfigError, HandgradError, host_rng
from backends.blas import blas_threads, limit_blas
from backends.errors import check_number
from backends.transfer import (
    batch_bounds,
    host_batches,
    is_host,
    is_streamed,
    take_rows,
    to_numpy,
)
from model.data import DataError
from model.fast import fast_step

__all__ = [
    "EVAL_ROWS",
    "DivergenceError",
    "FitResult",
    "check_inputs",
    "check_schedule",
    "evaluate",
    "fit",
    "run_epoch",
]

EVAL_ROWS = 8192  # evaluate() works in chunks of this many rows: bounded activation memory


class DivergenceError(HandgradError, FloatingPointError):
    """The training loss or a parameter became NaN or infinite in ``epoch`` (from 1)."""

    def __init__(self, epoch: int, loss: float, lr: float | None):
        smaller = lr / 10 if lr and math.isfinite(lr) else None
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
    """Trained parameters, final optimizer state, and per-epoch history (host floats)."""

    params: dict
    state: dict
    history: dict


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
    model, params, state, X, Y, optimizer, *, batch_size=None, order=None, xp=None, comm=None
):
    """One pass over (X, Y) in batches of ``batch_size`` (all rows when None), in row order
    or, when ``order`` (a host permutation of the rows) is given, batch k being the rows
    ``order[k*batch_size:(k+1)*batch_size]``. Returns ``(params, state, epoch_loss)``, the
    loss a 0-d device array. No value is read back to the host here.

    ``X``, ``Y`` on the parameters' device (``Y`` as from ``model.prepare_targets`` or
    labels), or host NumPy arrays to stream (see the module docstring).

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
    step = fast_step(model, optimizer, params, batch, xp=xp, comm=comm)
    losses = []
    for (start, stop), (a, b) in zip(bounds, parts, strict=True):
        grads = None
        if b > a:
            xb, yb = next(rows)
            yb = model.prepare_targets(yb, dtype=like.dtype, xp=xp)  # no-op when prepared
            if step is not None:
                params, state, loss = step(params, state, xb, yb)
                losses.append(loss)
                continue
            _, cache = model.forward(params, xb, xp=xp)
            losses.append(model.loss_from_cache(cache, yb, xp=xp))
            grads = model.backward(params, cache, yb, xp=xp)
        if comm is not None:
            weight = 1.0 if model.loss_spec.name == "sse" else (b - a) / (stop - start)
            grads = comm.sum_arrays(grads, like=params, weight=weight)
        params, state = optimizer.update(params, grads, state, xp=xp)
    loss = _weighted_total(losses, mine, n, model.loss_spec.name, like, xp=xp)
    return params, state, _summed({"loss": loss}, comm)["loss"]


def evaluate(model, params, X, Y, /, *, xp=None, comm=None) -> dict:
    """Loss and, for classifiers, accuracy on (X, Y) as host floats (one read-back each).

    Works in chunks of :data:`EVAL_ROWS` rows (the loss of a mean loss is the row-weighted
    mean of the chunks' losses), so it also takes streamed host data. With ``comm``, each
    rank scores its contiguous share of the rows and the sums are allreduced."""
    totals = scores(model, params, X, Y, xp=xp, comm=comm)
    out = {"loss": float(totals["loss"]) + 0.0}  # a loss of -0.0 (all p = 1) reads 0.0
    if model.is_classifier:
        out["accuracy"] = float(totals["hits"]) / X.shape[0]
    return out


def scores(model, params, X, Y, /, *, xp=None, comm=None) -> dict:
    """The loss on (X, Y) and, for classifiers, ``hits`` (the number of rows classified
    right) as device arrays: 0-d, or (R,) (one per replica) for replica-stacked
    parameters; summed over the ranks of ``comm``. Nothing is read back."""
    like = next(iter(params.values()))
    xp = xp or array_namespace(like)
    n = X.shape[0]
    batch = min(EVAL_ROWS, n)
    lo, hi = (0, n) if comm is None else batch_bounds(n, n, comm.rank, comm.size)[0]
    bounds = [(s, min(s + batch, hi)) for s in range(lo, hi, batch)]
    losses, hits = [], []
    for xb, yb in _batches(X, Y, None, batch, like, xp=xp, bounds=bounds):
        losses.append(model.loss_value(params, xb, yb, xp=xp))
        if model.is_classifier:
            labels = yb if yb.ndim == 1 else xp.reshape(yb, (-1,))
            hit = model.predict_class(params, xb, xp=xp) == xp.astype(labels, xp.int64)
            hits.append(xp.sum(xp.astype(hit, like.dtype), axis=-1))
    totals = {"loss": _weighted_total(losses, bounds, n, model.loss_spec.name, like, xp=xp)}
    if model.is_classifier:
        zero = xp.zeros((), dtype=like.dtype, device=device(like))  # a rank with no rows
        totals["hits"] = xp.sum(xp.stack(hits, axis=-1), axis=-1) if hits else zero
    return _summed(totals, comm)


def _where(a) -> str:
    """An array's library and device, for messages ("a numpy array on cpu")."""
    try:
        xp = array_namespace(a)
    except TypeError:
        return f"a {type(a).__name__}"
    return f"a {xp.__name__.removeprefix('array_api_compat.')} array on {device(a)}"


def _dtype_name(dtype) -> str:
    return str(dtype).rpartition(".")[2]


def check_schedule(epochs, batch_size, start_epoch) -> None:
    """ConfigError unless ``0 <= start_epoch <= epochs`` are integers (equal: nothing left
    to train) and ``batch_size`` is None or a positive integer."""
    check_number("start_epoch", start_epoch, integer=True, low=0)
    check_number("epochs", epochs, integer=True, low=start_epoch)
    if batch_size is not None:
        check_number("batch_size", batch_size, integer=True, low=1)


def check_inputs(model, params: dict, X, Y, /, names=("X", "Y")) -> bool:
    """Check that the parameters share one array namespace, device and floating dtype,
    and that (X, Y) can train them: both on that device, X with that dtype and Y with it
    too or (classifiers) integer labels; or both host NumPy data to stream (any numeric X,
    cast per batch). Then their shapes and values (:func:`_check_values`). Returns True
    for streamed data. Raises ConfigError naming the array that differs and the fix, or
    DataError for values that cannot train."""
    for name, a in zip(names, (X, Y), strict=True):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise ConfigError(
                f"{name} is {_where(a)}, not an array; convert it with backend.asarray"
            )
    first_name, first = next(iter(params.items()))
    fix = "draw them with model.init_params(backend, rng), or move each with backend.asarray"
    for name, p in params.items():
        if _where(p) != _where(first):
            raise ConfigError(
                f"parameter {name} is {_where(p)} but {first_name} is {_where(first)}; {fix}"
            )
        xp = array_namespace(p)
        if p.dtype != first.dtype or not xp.isdtype(p.dtype, "real floating"):
            raise ConfigError(
                f"parameter {name} is {_dtype_name(p.dtype)} and {first_name} is "
                f"{_dtype_name(first.dtype)}; the "
                f"parameters need one floating dtype: {fix}"
            )
    x_name, y_name = names
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(
            f"{x_name} has {X.shape[0]} rows but {y_name} has {Y.shape[0]}; they must match"
        )
    labels_ok = model.is_classifier
    if is_streamed(X, xp) or is_streamed(Y, xp):
        for name, a, other in ((x_name, X, y_name), (y_name, Y, x_name)):
            if not is_host(a):
                raise ConfigError(
                    f"{name} is {_where(a)} but {other} is host NumPy "
                    "data, streamed to the device batch by batch; pass both as host NumPy "
                    "arrays, or move both with backend.asarray"
                )
            kinds = "fiu" if a is X or labels_ok else "f"
            if a.dtype.kind not in kinds:
                raise ConfigError(f"{name} holds {a.dtype} values; stream real numbers")
        _check_values(model, X, Y, names, streamed=True)
        return True
    move = "move it with backend.asarray (the parameters' backend)"
    for name, a in ((x_name, X), (y_name, Y)):
        if _where(a) != _where(first):
            raise ConfigError(
                f"{name} is {_where(a)} but the parameters are {_where(first)}; {move}"
            )
    dtype = _dtype_name(first.dtype)
    if X.dtype != first.dtype:
        raise ConfigError(
            f"{x_name} is {_dtype_name(X.dtype)} but the parameters are {dtype}; {move}"
        )
    if xp.isdtype(Y.dtype, "integral") and not labels_ok:
        raise ConfigError(
            f"{y_name} holds integer labels, but the loss {model.loss_spec.name!r} needs "
            f"{dtype} targets; {move}"
        )
    if not xp.isdtype(Y.dtype, "integral") and Y.dtype != first.dtype:
        labels = " or pass integer class labels" if labels_ok else ""
        raise ConfigError(
            f"{y_name} is {_dtype_name(Y.dtype)} but the parameters are {dtype}; {move}{labels}"
        )
    _check_values(model, X, Y, names, streamed=False)
    return False


def _check_values(model, X, Y, names, /, *, streamed: bool) -> None:
    """X of shape (n, d), n >= 1, for the model's d inputs; Y integer class labels of
    shape (n,) within the model's classes (0..K-1; 0/1 for bce, also of shape (n, 1)), or
    targets of shape (n, K) (also (n,) when K = 1), a classifier's within [0, 1]; X and Y
    finite unless ``streamed`` (a file is checked a block at a time before training,
    :func:`model.data.validate`: a pass here would read it again). Each check reads back
    one value: a few synchronizations per call, none per epoch."""
    (x_name, y_name), d, k = names, model.sizes[0], model.sizes[-1]
    if X.ndim != 2 or X.shape[1] != d:
        raise ConfigError(
            f"{x_name} has shape {tuple(X.shape)} but the model takes {d} features per row; "
            f"pass an array of shape (n, {d})"
        )
    if X.shape[0] == 0:
        raise DataError(f"{x_name} has no rows; pass at least one")
    xp = array_namespace(Y)
    loss = model.loss_spec.name
    labels = model.is_classifier and xp.isdtype(Y.dtype, "integral")
    if labels:
        ok = Y.ndim == 1 or (k == 1 and Y.shape[1:] == (1,))
        expected = "integer class labels of shape (n,)" + (" or (n, 1)" if k == 1 else "")
    else:
        ok = (Y.ndim == 2 and Y.shape[1] == k) or (Y.ndim == 1 and k == 1)
        expected = f"targets of shape (n, {k})" + (" or (n,)" if k == 1 else "")
        if loss == "cross_entropy":
            expected = f"integer class labels of shape (n,) or one-hot rows of shape (n, {k})"
    if not ok:
        fix = ""
        if labels and Y.shape[1:] == (1,):
            fix = "; pass the labels as one column of shape (n,): y.reshape(-1)"
        elif model.is_classifier and Y.ndim == 1:  # labels as floats, likely
            how = (
                "np.asarray(y, dtype=np.int64)"
                if streamed
                else "backend.asarray(y, dtype=backend.xp.int64)"
            )
            fix = f"; make float labels integers: {how}"
        raise ConfigError(
            f"{y_name} has shape {tuple(Y.shape)}, but this model ({k} outputs, loss "
            f"{loss!r}) trains on {expected}{fix}"
        )
    if model.is_classifier:
        lo, hi = to_numpy(xp.stack([xp.min(Y), xp.max(Y)])).tolist()
        classes = 2 if loss == "bce" else k
        if labels and (lo < 0 or hi >= classes):
            raise DataError(
                f"{y_name} holds labels from {lo} to {hi}, but the model has {classes} "
                f"classes, labelled 0 to {classes - 1}; map the labels onto 0..{classes - 1} "
                "(model.preprocessing.LabelEncoder does), or size the output layer for them"
            )
        if not labels and (lo < 0 or hi > 1):
            raise DataError(
                f"{y_name} holds targets from {lo:g} to {hi:g}, but the loss {loss!r} takes "
                "probabilities in [0, 1] (0/1 values or one-hot rows); pass class labels as "
                "integers, or use a regression loss (mse, sse)"
            )
    if not streamed:
        for name, a in [(x_name, X)] + ([] if labels else [(y_name, Y)]):
            if not _all_finite(a, xp):
                raise DataError(
                    f"{name} holds NaN or infinite values; drop or impute those rows before "
                    "training"
                )


def _all_finite(a, xp) -> bool:
    """Whether every value of ``a`` is finite: blocks of EVAL_ROWS rows (temporaries of
    bounded size), one read-back."""
    n = a.shape[0]
    flags = [xp.all(xp.isfinite(a[i : min(i + EVAL_ROWS, n), ...])) for i in range(0, n, EVAL_ROWS)]
    return bool(xp.all(xp.stack(flags))) if flags else True


def _largest_product(params, batch: int) -> int:
    """Multiply-adds of the step's largest matrix product: batch x fan_in x fan_out."""
    return max((batch * p.shape[0] * p.shape[1] for p in params.values() if p.ndim == 2), default=0)


def _finite_loss(loss, params, /, *, xp):
    """where(every parameter finite, loss, NaN): one 0-d value to read back per epoch."""
    finite = xp.all(xp.isfinite(loss))
    for p in params.values():
        finite = xp.logical_and(finite, xp.all(xp.isfinite(p)))
    return xp.where(finite, loss, math.nan)


def fit(
    model,
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
) -> FitResult:
    """Train ``params`` (updated in place) for epochs ``start_epoch .. epochs - 1``.

    ``batch_size=None`` is full-batch gradient descent (no shuffling). Otherwise rows are
    shuffled every epoch by ``rng`` (a host ``numpy.random.Generator``; default seed 0;
    one ``rng.permutation(n)`` per epoch), so the same seed gives the same batches on
    every backend. ``X``, ``Y`` (and ``validation=(X_val, Y_val)``) are on the parameters'
    device, or host NumPy arrays to stream, memmaps included (see the module docstring and
    :func:`check_inputs`). ``state`` resumes an optimizer. ``validation`` adds ``val_loss``
    (and ``val_accuracy`` for classifiers) to the history. ``callback(epoch, params, state,
    record)`` runs after each epoch whose loss and parameters are finite, ``record`` being
    that epoch's host floats.

    ``comm`` (a :class:`backends.comm.Communicator`) trains data-parallel: rank 0's
    parameters are broadcast first; every rank passes the same data, draws the same
    permutations and computes its part of every batch (:func:`run_epoch`); losses and
    metrics are summed over the ranks, so every rank records the same history.
    """
    check_schedule(epochs, batch_size, start_epoch)
    streamed = check_inputs(model, params, X, Y)
    if validation is not None:
        check_inputs(model, params, *validation, names=("X_val", "Y_val"))
    like = next(iter(params.values()))
    xp = array_namespace(like)
    n = X.shape[0]
    targets = Y if streamed else model.prepare_targets(Y, dtype=like.dtype, xp=xp)
    state = optimizer.init(params) if state is None else state
    shuffle = batch_size is not None and batch_size < n
    rng = host_rng(0) if rng is None and shuffle else rng
    batch = n if batch_size is None else min(batch_size, n)
    if comm is not None:
        comm.broadcast_arrays(params)
    part = -(-batch // (1 if comm is None else comm.size))  # a rank's rows of a batch
    threads = blas_threads(_largest_product(params, part)) if is_numpy_namespace(xp) else None
    history: dict[str, list[float]] = {"loss": []}
    with limit_blas(threads):
        for epoch in range(start_epoch, epochs):
            order = rng.permutation(n) if shuffle else None
            params, state, loss = run_epoch(
                model,
                params,
                state,
                X,
                targets,
                optimizer,
                batch_size=batch_size,
                order=order,
                xp=xp,
                comm=comm,
            )
            record = {"loss": float(_finite_loss(loss, params, xp=xp)) + 0.0}  # -0.0 -> 0.0
            if not math.isfinite(record["loss"]):
                raise DivergenceError(epoch + 1, record["loss"], getattr(optimizer, "lr", None))
            if validation is not None:
                val = evaluate(model, params, *validation, xp=xp, comm=comm)
                record.update({f"val_{k}": v for k, v in val.items()})
            for k, v in record.items():
                history.setdefault(k, []).append(v)
            if callback is not None:
                callback(epoch, params, state, record)
    return FitResult(params, state, history)
