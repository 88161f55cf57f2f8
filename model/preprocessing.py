"""Preprocessing fitted on the training split, saved with the model, applied identically
at prediction time. Host NumPy, before any device sees the data.

    Standardizer   x' = (x - mean) / sd per feature, mean and sd of the training rows
                   (population sd; a constant feature gets sd = 1, so it maps to 0)
    LabelEncoder   class labels (any integers, e.g. {3, 7, 9}) <-> indices 0..K-1 in
                   sorted order; the network sees indices, the user sees labels

:func:`resolve_targets` decides the loss when none is set (integer labels: classes; a
0/1 matrix whose rows are not all one-hot: multi-label; anything else: regression) and
encodes the labels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backends.transfer import HostRows, row_chunks
from model.data import DataError

__all__ = [
    "MAX_CLASSES",
    "MAX_INFERRED_CLASSES",
    "LabelEncoder",
    "Standardizer",
    "Targets",
    "resolve_targets",
]

MAX_INFERRED_CLASSES = 100  # more distinct integers than this look like a regression target
MAX_CLASSES = 10_000  # a softmax wider than this is almost surely a mistake in the data


@dataclasses.dataclass(frozen=True, eq=False)
class Standardizer:
    """Per-feature ``mean`` and ``sd`` (float64 host arrays of shape (d,))."""

    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, X) -> Standardizer:
        """mean_j = 1/n sum_i x_ij, sd_j = sqrt(1/n sum_i (x_ij - mean_j)^2), in two passes
        over row blocks (shifted sums keep float64 accurate); a memory-mapped X (or
        :class:`HostRows` of one) is never resident whole."""
        n = X.shape[0]
        mean = sum(chunk.sum(axis=0) for chunk in row_chunks(X)) / n
        shifted = (chunk - mean for chunk in row_chunks(X))
        squares = sum(np.einsum("ij,ij->j", d, d) for d in shifted)
        sd = np.sqrt(squares / n)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(sd))):
            column = int(np.flatnonzero(~np.isfinite(mean) | ~np.isfinite(sd))[0])
            raise DataError(
                f"column {column} of X has values too large to standardize (its mean or sd "
                "overflows float64); rescale the data before training"
            )
        sd[sd == 0] = 1.0
        return cls(mean, sd)

    def transform(self, X) -> np.ndarray | HostRows:
        """(X - mean) / sd as a new float64 array; for :class:`HostRows`, the same rows
        mapped so as they are read."""
        X = X if isinstance(X, HostRows) else np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise DataError(
                f"X has shape {X.shape} but the standardization was fitted on "
                f"{self.mean.shape[0]} features; pass rows with {self.mean.shape[0]} columns"
            )
        if isinstance(X, HostRows):
            return X.scaled(self.mean, self.sd)
        return (X - self.mean) / self.sd

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "sd": self.sd.tolist()}

    @classmethod
    def from_json(cls, data, n_features: int, source: str) -> Standardizer:
        """Rebuild from :meth:`to_json`, checking length, finiteness and sd > 0."""
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            sd = np.asarray(data["sd"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{source}: the standardization entry is malformed") from None
        if mean.shape != (n_features,) or sd.shape != (n_features,):
            raise DataError(
                f"{source}: standardization has {mean.shape} means and {sd.shape} sds for a "
                f"model with {n_features} inputs"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(sd)) and np.all(sd > 0)):
            raise DataError(f"{source}: standardization holds NaN, inf or an sd <= 0")
        return cls(mean, sd)


@dataclasses.dataclass(frozen=True, eq=False)
class LabelEncoder:
    """The sorted class labels; index k of the network's output is ``classes[k]``."""

    classes: np.ndarray

    @classmethod
    def fit(cls, y) -> LabelEncoder:
        """The distinct labels of ``y`` (1-D, integer-valued), sorted."""
        y = np.asarray(y).reshape(-1)
        fractional = y != np.round(y)
        if fractional.any():
            raise DataError(
                f"class labels must be integers, got {y[fractional][0]:g}; for real-valued "
                "targets train with the loss 'mse'"
            )
        huge = np.abs(y.astype(np.float64)) >= 2.0**63
        if huge.any():
            raise DataError(
                f"class label {y[huge][0]:g} does not fit in a 64-bit integer; relabel the "
                "classes, or train with the loss 'mse' if y is a regression target"
            )
        return cls(np.unique(y.astype(np.int64)))

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, y) -> np.ndarray:
        """Labels -> indices 0..K-1 (int64); a label not seen in training is an error."""
        y = np.asarray(y).reshape(-1)
        index = np.searchsorted(self.classes, y)
        index = np.minimum(index, len(self.classes) - 1)
        unknown = self.classes[index] != y
        if unknown.any():
            known = ", ".join(str(c) for c in self.classes[:10])
            more = ", ..." if len(self.classes) > 10 else ""
            raise DataError(
                f"label {y[unknown][0]:g} is not one of the model's {len(self.classes)} "
                f"classes ({known}{more}); the data must use the classes it was trained on"
            )
        return index.astype(np.int64)

    def decode(self, index) -> np.ndarray:
        """Indices 0..K-1 -> labels."""
        return self.classes[np.asarray(index)]

    def to_json(self) -> list:
        return self.classes.tolist()

    @classmethod
    def from_json(cls, data, n_classes: int, source: str) -> LabelEncoder:
        """Rebuild from :meth:`to_json`: ``n_classes`` distinct sorted integers."""
        try:
            classes = np.asarray(data)
        except (TypeError, ValueError):
            classes = np.zeros(0)
        if (
            classes.shape != (n_classes,)
            or classes.dtype.kind not in "iu"
            or np.any(np.diff(classes) <= 0)
        ):
            raise DataError(
                f"{source}: the class list must hold {n_classes} distinct sorted integers, "
                f"got {data!r:.80}"
            )
        return cls(classes.astype(np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Targets:
    """Targets ready for training: ``y`` holds class indices 0..K-1 (int64, shape (n,))
    for classifiers, a 0/1 int64 matrix (n, outputs) for multi-label bce (classes 0 and
    1 for each label), float64 values of shape (n, outputs) otherwise."""

    y: np.ndarray
    loss: str
    outputs: int
    labels: LabelEncoder | None
    reason: str  # how the loss was chosen, for the log and metrics.json


def resolve_targets(
    y, loss: str | None = None, labels: LabelEncoder | None = None, reason: str = "as set"
) -> Targets:
    """Choose the loss (when ``loss`` is None) and encode class labels.

    Inferred: integer targets with 2..MAX_INFERRED_CLASSES distinct values, or one-hot
    rows (classes = column indices), are classes (cross_entropy); a matrix of 0s and 1s
    with more than one column whose rows are not all one-hot is multi-label (bce, one
    sigmoid output per column; ``loss`` bce with any 0/1 matrix too); anything else is a
    regression target (mse). ``labels`` fixes the classes (a resumed run, a saved model);
    otherwise they are the distinct labels of y. ``reason``: why a given ``loss`` is the
    one (for the log and metrics.json)."""
    y = np.asarray(y)
    if _multi_label(y, loss):
        if loss is None:
            reason = (f"inferred: y is a 0/1 matrix of {y.shape[1]} labels whose rows are not "
                      "all one-hot: one sigmoid output per label (multi-label)")  # fmt: skip
        return Targets(y.astype(np.int64), "bce", y.shape[1], LabelEncoder(np.arange(2)), reason)
    one_hot = (
        y.ndim == 2
        and y.shape[1] > 1
        and loss in (None, "cross_entropy")
        and bool(np.all((y == 0) | (y == 1)))
        and bool(np.all(y.sum(axis=1) == 1))
    )
    column = np.argmax(y, axis=1) if one_hot else y
    column = column.reshape(-1) if column.ndim == 2 and column.shape[1] == 1 else column
    if loss is None:
        loss, reason = _inferred_loss(y, column, one_hot)
    if loss not in ("cross_entropy", "bce"):
        values = y[:, None] if y.ndim == 1 else y
        return Targets(values.astype(np.float64), loss, values.shape[1], None, reason)
    if column.ndim != 1:
        raise DataError(f"{loss} needs one class label per row, got y of shape {y.shape}")
    if labels is None:
        labels = LabelEncoder(np.arange(y.shape[1])) if one_hot else LabelEncoder.fit(column)
    _check_class_count(loss, len(labels))
    outputs = 1 if loss == "bce" else len(labels)
    return Targets(labels.encode(column), loss, outputs, labels, reason)


def _multi_label(y, loss) -> bool:
    """Whether ``y`` is a multi-label target for ``loss`` (None: inferred): a 0/1 matrix
    of more than one column, for bce, or with rows not all one-hot for an unset loss."""
    if y.ndim != 2 or y.shape[1] < 2 or loss not in (None, "bce") or y.dtype.kind not in "biuf":
        return False
    binary = bool(np.all((y == 0) | (y == 1)))
    if loss == "bce" and not binary:
        raise DataError(
            f"bce over {y.shape[1]} outputs (multi-label) takes a matrix of 0s and 1s, one "
            "column per label; y holds other values: use the loss 'mse' for real-valued "
            "targets",
            setting="loss",
        )
    return binary and (loss == "bce" or not bool(np.all(y.sum(axis=1) == 1)))


def _inferred_loss(y, column, one_hot: bool) -> tuple[str, str]:
    """(loss, why) for targets whose loss is not set (see :func:`resolve_targets`)."""
    if one_hot:
        return "cross_entropy", f"inferred: y is one-hot over {y.shape[1]} classes"
    integral = column.ndim == 1 and bool(np.all(column == np.round(column)))
    if not integral:
        return "mse", "inferred: the targets are not one integer label per row"
    count = len(np.unique(column))
    if count > MAX_INFERRED_CLASSES:
        raise DataError(
            f"y holds {count} distinct integer values, more than the "
            f"{MAX_INFERRED_CLASSES} classes a classifier is inferred for; if y is a "
            "regression target set the loss to 'mse' (to insist on classes, set "
            "'cross_entropy')",
            setting="loss",
            suggestion="mse",
        )
    if count < 2:
        raise DataError(  # the data is at fault, not the (inferred) loss
            f"every target is {column[0]:g}: there is nothing to learn; the data needs "
            "at least 2 different targets",
            setting="data",
        )
    return "cross_entropy", f"inferred: y holds {count} integer class labels"


def _check_class_count(loss: str, count: int) -> None:
    """bce: exactly 2 classes; cross_entropy: 2 to MAX_CLASSES."""
    wanted = (2, 2) if loss == "bce" else (2, MAX_CLASSES)
    if wanted[0] <= count <= wanted[1]:
        return
    if loss == "bce" and count > 2:
        fix = "use the loss 'cross_entropy' for more than 2 classes"
    elif count > MAX_CLASSES:
        fix = "use the loss 'mse' for a regression target"
    else:
        fix = "the data needs at least 2 classes"
    needs = "exactly 2" if wanted[0] == wanted[1] else f"{wanted[0]} to {wanted[1]}"
    raise DataError(
        f"{loss} needs {needs} classes, y holds {count}; {fix}",
        setting="data" if count < 2 else None,  # None: the loss, as the caller says
    )
