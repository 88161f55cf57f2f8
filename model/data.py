"""Datasets on the host: the bundled ones, the user's files, and the checks that keep bad
data out of training. Everything here is NumPy on the host, before any device sees it
(CuPy wraps out-of-range labels instead of raising, so labels are checked here).

Bundled (scikit-learn's copies, no download):
    digits         8x8 handwritten digits, 1797 x 64, pixel values / 16, 10 classes
    iris           150 x 4, 3 classes
    wine           178 x 13, 3 classes
    breast-cancer  569 x 30, 2 classes
    xor            400 points, 100 around each corner of the unit square (noise sd 0.15,
                   seed 0), class = x1 XOR x2
    regression     scikit-learn's diabetes data, 442 x 10, target standardized
User files (``--data``):
    .npz  arrays ``X`` (n, d) and ``y`` (n,) or (n, k)
    .csv  a header row, numbers only, the target in the last column
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backends.errors import HandgradError

__all__ = ["DATASETS", "DataError", "check_labels", "load_dataset", "load_file", "split"]

DATASETS = ("digits", "iris", "wine", "breast-cancer", "xor", "regression")


class DataError(HandgradError, ValueError):
    """Data that cannot be trained on; the message says what and how to fix it."""


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled dataset as host ``(X float64 (n, d), y)``."""
    from sklearn import datasets

    loaders = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast-cancer": datasets.load_breast_cancer,
        "regression": datasets.load_diabetes,
    }
    if name == "xor":
        rng = np.random.default_rng(0)
        corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
        X = np.repeat(corners, 100, axis=0) + rng.normal(0.0, 0.15, size=(400, 2))
        return X, np.repeat(np.array([0, 1, 1, 0]), 100)
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)}")
    X, y = loaders[name](return_X_y=True)
    if name == "digits":
        X = X / 16.0
    if name == "regression":
        y = (y - y.mean()) / y.std()
    return validate(X.astype(np.float64), y, name)


def load_file(path) -> tuple[np.ndarray, np.ndarray]:
    """The user's ``.npz`` (arrays X, y) or ``.csv`` (header row, target last)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; pass an existing .npz or .csv file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                missing = {"X", "y"} - set(f.files)
                if missing:
                    raise DataError(
                        f"--data {path} lacks array(s) {', '.join(sorted(missing))}; save it with "
                        "np.savez(path, X=features, y=targets)"
                    )
                X, y = f["X"], f["y"]
        elif path.suffix == ".csv":
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
            if table.shape[1] < 2:
                raise DataError(f"--data {path}: need at least one feature column and a target")
            X, y = table[:, :-1], table[:, -1]
        else:
            raise DataError(f"--data {path}: unknown format {path.suffix!r}; use .npz or .csv")
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"--data {path} is unreadable ({exc}); check the file's format") from None
    return validate(X, y, str(path))


def validate(X, y, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, numeric types and finiteness; returns float64 X and y as given."""
    X, y = np.asarray(X), np.asarray(y)
    if X.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataError(f"{source}: X and y must be numeric (got {X.dtype} and {y.dtype})")
    if X.ndim != 2:
        raise DataError(f"{source}: X must be 2-D (samples, features), got shape {X.shape}")
    if y.ndim not in (1, 2):
        raise DataError(f"{source}: y must be 1-D or 2-D, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DataError(
            f"{source}: X has {X.shape[0]} rows but y has {y.shape[0]}; they must match"
        )
    if X.shape[0] == 0:
        raise DataError(f"{source}: no samples")
    for name, a in (("X", X), ("y", y)):
        bad = ~np.isfinite(a)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"{source}: {name} has {int(bad.sum())} NaN or inf value(s), the first in row "
                f"{row}; drop or impute those rows first"
            )
    return X.astype(np.float64), y


def check_labels(y: np.ndarray, loss: str, n_outputs: int | None = None) -> np.ndarray:
    """Class labels for ``loss`` as int64: 0..K-1 for cross_entropy (K = n_outputs when
    the model is fixed), 0/1 for bce. Raises DataError naming the bad label and the fix."""
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1 and loss == "bce"):
        raise DataError(f"{loss} needs one label per row, got y of shape {y.shape}")
    y = y.reshape(-1)
    if not np.all(y == np.round(y)):
        value = y[y != np.round(y)][0]
        raise DataError(
            f"{loss} needs integer class labels, got {value:g}; use --loss mse for real targets"
        )
    labels = y.astype(np.int64)
    top = 1 if loss == "bce" else (n_outputs - 1 if n_outputs else None)
    bad = labels < 0 if top is None else (labels < 0) | (labels > top)
    if bad.any():
        allowed = f"0..{top}" if top is not None else "0, 1, 2, ..."
        hint = (
            "use --loss cross_entropy for more than 2 classes"
            if loss == "bce"
            else ("relabel the classes as 0..K-1 or start from a model with more outputs")
        )
        raise DataError(
            f"label {labels[bad][0]} is out of range for {loss} (allowed {allowed}); {hint}"
        )
    return labels


def split(X, y, val_fraction: float, seed: int, stratify: bool):
    """Held-out split (stratified for classes); ``val_fraction = 0`` keeps all for training."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return X, y, None, None
    from sklearn.model_selection import train_test_split

    try:
        X_tr, X_va, y_tr, y_va = train_test_split(
            X, y, test_size=val_fraction, random_state=seed, stratify=y if stratify else None
        )
    except ValueError as exc:
        raise DataError(f"cannot split off {val_fraction:g} for validation: {exc}") from None
    return X_tr, y_tr, X_va, y_va
