"""The training loop: epochs of (shuffled) minibatches, history read back once per epoch.

One epoch: draw a permutation on the host (when batching), gather the shuffled data once
on the device, then for each batch ``forward -> backward -> update``. The epoch's loss is
accumulated on the device as sum_b C_b * n_b / N for mean losses (sum_b C_b for ``sse``),
each C_b taken at the parameters before that batch's step (scikit-learn's
``loss_curve_`` convention), and read back once at the end of the epoch together with the
validation metric. A non-finite loss stops the fit with :class:`DivergenceError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from array_api_compat import array_namespace, device

from backends import HandgradError, host_rng

__all__ = ["DivergenceError", "FitResult", "evaluate", "fit", "run_epoch"]


class DivergenceError(HandgradError, FloatingPointError):
    """The training loss or a parameter became NaN or infinite in ``epoch`` (from 1)."""

    def __init__(self, epoch: int, loss: float, lr: float | None):
        smaller = lr / 10 if lr else None
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


def run_epoch(model, params, state, X, Y, optimizer, *, batch_size=None, xp=None):
    """One pass over (X, Y) in row order, in batches of ``batch_size`` (all rows when
    None); returns ``(params, state, epoch_loss)``, the loss a 0-d device array. No value
    is read back to the host here."""
    xp = xp or array_namespace(X)
    n = X.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    losses, weights = [], []
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        xb, yb = (X, Y) if batch == n else (X[start:stop, ...], Y[start:stop, ...])
        _, cache = model.forward(params, xb, xp=xp)
        losses.append(model.loss_from_cache(cache, yb, xp=xp))
        weights.append((stop - start) / n)
        grads = model.backward(params, cache, yb, xp=xp)
        params, state = optimizer.update(params, grads, state, xp=xp)
    if len(losses) == 1:
        return params, state, losses[0]
    if model.loss_spec.name == "sse":  # a sum over samples: batch sums add up
        weights = [1.0] * len(losses)
    w = xp.asarray(weights, dtype=X.dtype, device=device(X))
    return params, state, xp.sum(xp.stack(losses) * w)


def evaluate(model, params, X, Y, /, *, xp=None) -> dict:
    """Loss and, for classifiers, accuracy on (X, Y) as host floats (one read-back each)."""
    xp = xp or array_namespace(X)
    out = {"loss": float(model.loss_value(params, X, Y, xp=xp))}
    if model.is_classifier:
        labels = Y if Y.ndim == 1 else xp.reshape(Y, (-1,))
        hits = model.predict_class(params, X, xp=xp) == xp.astype(labels, xp.int64)
        out["accuracy"] = float(xp.mean(xp.astype(hits, X.dtype)))
    return out


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
) -> FitResult:
    """Train ``params`` (updated in place) for epochs ``start_epoch .. epochs - 1``.

    ``batch_size=None`` is full-batch gradient descent (no shuffling). Otherwise rows are
    shuffled every epoch by ``rng`` (a host ``numpy.random.Generator``; default seed 0),
    so the same seed gives the same batches on every backend. ``state`` resumes an
    optimizer. ``validation=(X_val, Y_val)`` adds ``val_loss`` (and ``val_accuracy`` for
    classifiers) to the history. ``callback(epoch, params, state, record)`` runs after each
    epoch, ``record`` being that epoch's host floats.
    """
    xp = array_namespace(X)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; they must match")
    targets = model.prepare_targets(Y, dtype=X.dtype, xp=xp)
    state = optimizer.init(params) if state is None else state
    shuffle = batch_size is not None and batch_size < X.shape[0]
    rng = host_rng(0) if rng is None and shuffle else rng
    history: dict[str, list[float]] = {"loss": []}
    X_epoch, Y_epoch = X, targets
    for epoch in range(start_epoch, epochs):
        if shuffle:
            order = xp.asarray(rng.permutation(X.shape[0]), device=device(X))
            # Gathered once per epoch. The last epoch's copies die only after these exist,
            # so the allocator reuses their memory instead of giving it back to the OS and
            # page-faulting it in again (on NumPy that was ~10% of a digits epoch).
            X_epoch, Y_epoch = xp.take(X, order, axis=0), xp.take(targets, order, axis=0)
        params, state, loss = run_epoch(
            model, params, state, X_epoch, Y_epoch, optimizer, batch_size=batch_size, xp=xp
        )
        record = {"loss": float(loss)}
        if not math.isfinite(record["loss"]):
            raise DivergenceError(epoch + 1, record["loss"], getattr(optimizer, "lr", None))
        if validation is not None:
            val = evaluate(model, params, *validation, xp=xp)
            record.update({f"val_{k}": v for k, v in val.items()})
        for k, v in record.items():
            history.setdefault(k, []).append(v)
        if callback is not None:
            callback(epoch, params, state, record)
    return FitResult(params, state, history)
