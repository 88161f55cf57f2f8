"""Datasets on the host: the bundled ones, the user's files, and the checks that keep bad
data out of training. Everything here is NumPy on the host, before any device sees it
(CuPy wraps out-of-range labels instead of raising, so labels are checked here).

Bundled (scikit-learn's copies, no download; read from its data files without importing
it, the arrays bit for bit those of its loaders, see :func:`read_bundled`):
    digits         8x8 handwritten digits, 1797 x 64, pixel values / 16, 10 classes
    iris           150 x 4, 3 classes
    wine           178 x 13, 3 classes
    breast-cancer  569 x 30, 2 classes
    xor            400 points, 100 around each corner of the unit square (noise sd 0.15,
                   seed 0), class = x1 XOR x2
    regression     scikit-learn's diabetes data, 442 x 10, target standardized
User files:
    .npz  arrays ``X`` (n, d) and ``y`` (n,) or (n, k)
    .npy  one 2-D array, the target in the last column
    .csv  numbers only, the target in the last column, with or without a header row
An uncompressed ``.npz`` (``np.savez``) or a ``.npy`` can also be memory-mapped and
streamed instead of loaded (:func:`model.streaming.map_data`).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import zipfile
from pathlib import Path

import numpy as np

from backends.errors import DataError
from backends.transfer import row_chunks

__all__ = [
    "DATASETS",
    "DataError",
    "check_finite",
    "check_range",
    "load_dataset",
    "load_features",
    "load_file",
    "not_a_file",
    "read_bundled",
    "read_file",
    "split_rows",
    "validate",
]

logger = logging.getLogger("handgrad")

DATASETS = ("digits", "iris", "wine", "breast-cancer", "xor", "regression")


# The bundled datasets' files in scikit-learn's package folder (sklearn/datasets/data/),
# and the scikit-learn loader whose arrays reading them gives.
_BUNDLED = {
    "digits": (("digits.csv.gz",), "load_digits"),
    "iris": (("iris.csv",), "load_iris"),
    "wine": (("wine_data.csv",), "load_wine"),
    "breast-cancer": (("breast_cancer.csv",), "load_breast_cancer"),
    "regression": (("diabetes_data_raw.csv.gz", "diabetes_target.csv.gz"), "load_diabetes"),
}


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled dataset as host ``(X float64 (n, d), y)``."""
    if name == "xor":
        rng = np.random.default_rng(0)
        corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
        X = np.repeat(corners, 100, axis=0) + rng.normal(0.0, 0.15, size=(400, 2))
        return X, np.repeat(np.array([0, 1, 1, 0]), 100)
    if name not in _BUNDLED:
        raise DataError(f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)}")
    X, y = read_bundled(name)
    if name == "digits":
        X = X / 16.0
    if name == "regression":
        y = (y - y.mean()) / y.std()
    return validate(X.astype(np.float64), y, name)


def read_bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a bundled dataset exactly as scikit-learn's ``load_<name>(return_X_y=
    True)`` returns them (``"regression"``: ``load_diabetes``), read from the files
    scikit-learn ships, without importing it: importing scikit-learn took longer (0.7-0.9 s)
    than loading the data and training the default model together. Where the files are not
    as expected (another scikit-learn layout), scikit-learn's own loader reads them."""
    files, loader = _BUNDLED[name]
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None:
        raise DataError(
            f"the bundled dataset {name!r} is scikit-learn's copy, and scikit-learn is not "
            "installed; install it (pip install scikit-learn, or the train extra), or train "
            "on a data file",
            setting="dataset",
        )
    folders = [Path(p) / "datasets" / "data" for p in spec.submodule_search_locations or ()]
    paths = [folder / f for folder in folders[:1] for f in files]
    if not paths or not all(p.is_file() for p in paths):
        return _sklearn_loader(loader)
    if name == "digits":  # load_digits: np.loadtxt of the gzip text, the class last
        data = _loadtxt_gzip(paths[0], delimiter=",")
        return data[:, :-1], data[:, -1].astype(int, copy=False)
    if name == "regression":  # load_diabetes(scaled=True)
        X, y = _loadtxt_gzip(paths[0]), _loadtxt_gzip(paths[1])
        X = _scale(X)
        X /= X.shape[0] ** 0.5
        return X, y
    # load_csv_data: a first row "n_samples,n_features,class names...", then per row the
    # features and an integer class
    with open(paths[0], encoding="utf-8") as f:
        head = f.readline().split(",")
        table = np.loadtxt(f, delimiter=",", ndmin=2, dtype=np.float64)
    n, d = int(head[0]), int(head[1])
    if table.shape != (n, d + 1) or np.any(table[:, -1] != np.round(table[:, -1])):
        return _sklearn_loader(loader)
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(int)


def _sklearn_loader(loader: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    return getattr(datasets, loader)(return_X_y=True)


def _loadtxt_gzip(path: Path, **kwargs) -> np.ndarray:
    """np.loadtxt of a gzip-compressed text file, as scikit-learn's
    load_gzip_compressed_csv_data reads one."""
    import gzip

    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        return np.loadtxt(f, **kwargs)


def _scale(X: np.ndarray) -> np.ndarray:
    """scikit-learn's ``preprocessing.scale(X, copy=False)`` of a float64 2-D array, step
    for step (its float rounding included): centred by the column means, re-centred if
    that left the means far from 0, divided by the population sd (1 for a constant
    column), and re-centred again if needed."""
    mean, sd = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    X -= mean
    mean_1 = np.nanmean(X, axis=0)
    if not np.allclose(mean_1, 0):
        X -= mean_1
    sd[sd < 10 * np.finfo(sd.dtype).eps] = 1.0
    X /= sd
    mean_2 = np.nanmean(X, axis=0)
    if not np.allclose(mean_2, 0):
        X -= mean_2
    return X


def load_file(path, *, header: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The user's ``.npz`` (arrays X, y), or ``.npy`` or ``.csv`` (target in the last
    column).

    A CSV's first row is a header when ``header`` is True, data when False, and when None
    a header when all its fields are text, data when all are numbers; the choice is
    logged."""
    table, arrays, note = read_file(path, header=header)
    if arrays is not None:
        missing = {"X", "y"} - set(arrays)
        if missing:
            raise DataError(
                f"data file {path} lacks array(s) {', '.join(sorted(missing))}; save it with "
                "np.savez(path, X=features, y=targets)"
            )
        return validate(arrays["X"], arrays["y"], str(path))
    if table.shape[1] < 2:
        raise DataError(
            f"data file {path} has {table.shape[1]} column(s); it needs at least one feature "
            "column and the target in the last column"
        )
    X, y = validate(table[:, :-1], table[:, -1], str(path))
    logger.info("data %s: %s, the target in the last column", path, note)
    return X, y


def read_file(path, *, header: bool | None = None):
    """``(table, None, note)`` for a CSV or ``.npy`` (a 2-D array; ``note`` says how it
    was read) or ``(None, arrays, None)`` for an ``.npz``. Nothing is checked beyond
    readability."""
    formats = ".npz, .npy or .csv"
    if path is None or not str(path).strip():
        raise DataError(f"the data file path is empty; pass an existing {formats} file")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path}: {not_a_file(path)}; pass an existing {formats} file")
    suffix = path.suffix.lower()  # data.CSV, as some tools name it, is a CSV
    if suffix not in (".npz", ".npy", ".csv"):
        raise DataError(f"data file {path}: unknown format {path.suffix!r}; use {formats}")
    try:
        if suffix == ".npy":
            with open(path, "rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    raise DataError(
                        f"data file {path} is not a .npy file; write it with "
                        "np.save(path, table), the target in the last column"
                    )
            table = np.load(path, allow_pickle=False)
            if table.ndim != 2:
                raise DataError(
                    f"data file {path} holds an array of shape {table.shape}; a .npy needs "
                    "one 2-D array, the target in the last column"
                )
            return table, None, "a .npy table"
        if suffix == ".npz":
            if not zipfile.is_zipfile(path):
                raise DataError(
                    f"data file {path} is not an .npz archive; write it with "
                    "np.savez(path, X=features, y=targets)"
                )
            with np.load(path, allow_pickle=False) as f:
                return None, {k: f[k] for k in f.files}, None
        table, note = _read_csv(path, header)
        return table, None, note
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        fix = {
            ".csv": "every row must hold the same number of comma-separated numbers",
            ".npy": "save numbers only, with np.save(path, table)",
            ".npz": "save numbers only, with np.savez(path, X=features, y=targets)",
        }[suffix]
        raise DataError(
            f"data file {path} is unreadable ({str(exc).split('; use `usecols`')[0]}); {fix}"
        ) from None


def not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read as data: a folder, no
    such file, or something else (a named pipe, a device such as /dev/zero, a socket),
    whose reading would block or never end."""
    if path.is_dir():
        return "a folder"
    if not path.exists():
        return "no such file"
    return "not a regular file (a pipe, device or socket)"


def load_features(path, n_features: int, *, header: bool | None = None):
    """Rows to predict on: ``(X, y or None)`` from an ``.npz`` (array X, optionally y) or a
    ``.csv`` with ``n_features`` columns, or one more holding the labels last."""
    table, arrays, note = read_file(path, header=header)
    if arrays is not None:
        if "X" not in arrays:
            raise DataError(
                f"data file {path} has no array 'X'; save it with np.savez(path, X=features)",
                setting="data",
            )
        X, y = arrays["X"], arrays.get("y")
        return validate(X, y, str(path))
    if table.shape[1] not in (n_features, n_features + 1):
        raise DataError(
            f"data file {path} has {table.shape[1]} columns but the model takes {n_features} "
            f"features ({n_features + 1} columns with the labels last)",
            setting="data",
        )
    labelled = table.shape[1] > n_features
    X, y = validate(table[:, :n_features], table[:, -1] if labelled else None, str(path))
    logger.info(
        "data %s: %s, %s", path, note, "labels in the last column" if labelled else "no labels"
    )
    return X, y


def _read_csv(path: Path, header: bool | None) -> tuple[np.ndarray, str]:
    """The CSV's table of numbers and a note on its first row, which is a header when
    ``header`` is True, data when False, and when None as :func:`_is_header` finds."""
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8" writes one) is not part of the
    # first field, which would otherwise read as text.
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        lines = enumerate(f, 1)
        # A header the user names is the first line even when a '#' comment, as np.savetxt's
        # header= writes it; a detected one is the first row np.loadtxt reads.
        line, fields = next(_rows(lines, comments=not header), (0, []))
        rows = _rows(lines)
        if not fields:
            raise DataError(f"data file {path} is empty; it needs rows of comma-separated numbers")
        for sep, name in ((";", "';'"), ("\t", "tabs")):
            if any(sep in field for field in fields):
                raise DataError(
                    f"data file {path} separates its fields with {name} (line {line}); handgrad "
                    "reads comma-separated values: save it with ',' between fields, '.' in decimals"
                )
        detected = header is None
        if detected:
            header = _is_header(path, line, fields, rows)
        if header:
            data_line, data = next(rows, (0, []))
            if not data:
                raise DataError(f"data file {path} has a header but no data rows", setting="data")
            if len(data) != len(fields):
                raise DataError(
                    f"the header of {path} (line {line}) has {len(fields)} fields but the first "
                    f"data row (line {data_line}) has {len(data)}; give them the same number"
                )
    skip = line if header else 0
    try:
        table = np.loadtxt(
            path,
            delimiter=",",
            quotechar='"',
            skiprows=skip,
            ndmin=2,
            dtype=np.float64,
            encoding="utf-8-sig",
        )
    except ValueError:  # its message counts rows from 0 after the header: find the line here
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            error = _bad_row(path, _rows((n, text) for n, text in enumerate(f, 1) if n > skip))
        if error is None:
            raise
        raise error from None
    kind = "a header" if header else "data (no header)" if detected else "data"
    return table, f"the first row is {kind}" + (", detected" if detected else "")


def _is_header(path: Path, line: int, fields: list[str], rows) -> bool:
    """Whether the CSV's first row, ``fields`` at ``line``, is a header: True when all its
    fields are text, False when all are numbers. A row mixing them is refused, as bad data
    or a mistyped header would otherwise be dropped as a header or trained on; ``rows``,
    the rows after it, tell text labels without a header from a typo."""
    text = [(i, field) for i, field in enumerate(fields, 1) if not _is_number(field)]
    if len(text) in (0, len(fields)):
        return bool(text)
    column, field = text[0]
    after = next(rows, None)
    empty = not any(name for _, name in text)
    # text labels and no header: the next row's last field is text too
    labels = text == [(len(fields), field)] and after and not _is_number(after[1][-1])
    if empty or labels:
        raise _cell_error(path, line, column, field, len(fields))
    raise DataError(
        f"the first row of {path} (line {line}) mixes numbers and text (field {column}: "
        f"{field!r}): a header's fields are all names, a data row's all numbers; fix that row"
    )


def _rows(lines, comments: bool = True):
    """``(line number, fields)`` of each row of the CSV's ``(line number, line)`` pairs,
    the fields stripped of whitespace and unquoted; blank lines are skipped, as np.loadtxt
    skips them, and so are '#' comment lines when ``comments``."""
    for number, line in lines:
        text = line.strip()
        if text and not (comments and text.startswith("#")):
            yield number, [field.strip() for field in next(csv.reader([line]))]


def _bad_row(path: Path, rows) -> DataError | None:
    """The error for the first of the CSV's data ``rows`` that is not a row of numbers as
    wide as the first: it names the line and the column, both from 1, and the fix. None
    where all look right."""
    width = first = None
    for line, fields in rows:
        if width is None:
            width, first = len(fields), line
        if len(fields) != width:
            return DataError(
                f"data file {path}: every row needs {width} fields, as line {first} has, and "
                f"line {line} has {len(fields)}; give every row the same number of fields"
            )
        for column, field in enumerate(fields, 1):
            if not _is_number(field):
                return _cell_error(path, line, column, field, width)
    return None


def _cell_error(path: Path, line: int, column: int, field: str, width: int) -> DataError:
    """The error for ``field``, not a number, at ``line`` and ``column`` of a CSV whose
    rows have ``width`` fields, the last the target."""
    where = f"data file {path}, line {line}, column {column}"
    if not field:
        return DataError(f"{where} is empty; fill in that cell or drop the row")
    if column == width:
        return DataError(
            f"{where} (the target) holds the text {field!r}; encode text labels as integers "
            "0..K-1, one per class"
        )
    return DataError(
        f"{where} holds the text {field!r}; a feature must be a number in every row: fix the "
        "cell, or encode a text column as numbers or drop it"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def validate(X, y, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Check shapes, numeric types and finiteness; returns float64 X (a memmap as it is)
    and y as given. ``y`` None checks the features alone (rows to predict on)."""
    X = X if isinstance(X, np.memmap) else np.asarray(X)
    arrays = {"X": X} if y is None else {"X": X, "y": np.asarray(y)}
    if any(a.dtype.kind not in "biuf" for a in arrays.values()):
        got = " and ".join(str(a.dtype) for a in arrays.values())
        raise DataError(f"{source}: {' and '.join(arrays)} must be numeric (got {got})")
    if X.ndim != 2:
        raise DataError(f"{source}: X must be 2-D (samples, features), got shape {X.shape}")
    if y is not None:
        y = arrays["y"]
        if y.ndim not in (1, 2):
            raise DataError(f"{source}: y must be 1-D or 2-D, got shape {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise DataError(
                f"{source}: X has {X.shape[0]} rows but y has {y.shape[0]}; they must match"
            )
    if X.shape[0] == 0:
        raise DataError(f"{source}: no samples")
    if X.shape[1] == 0:
        raise DataError(f"{source}: X has no feature columns")
    for name, a in arrays.items():
        check_finite(a, name, source)
    return (X if isinstance(X, np.memmap) else X.astype(np.float64)), y


def check_finite(a, name: str, source: str = "") -> None:
    """A DataError naming how many NaN or inf values ``a`` holds and the first row. Reads
    ``a`` in bounded row blocks (:func:`backends.transfer.row_chunks`): a memmap is never
    resident whole."""
    count, first, start = 0, None, 0
    for chunk in row_chunks(a):
        bad = ~np.isfinite(chunk)
        if first is None and bad.any():
            first = start + int(np.argwhere(bad)[0][0])
        count += int(bad.sum())
        start += chunk.shape[0]
    if count:
        raise DataError(
            f"{source + ': ' if source else ''}{name} has {count} NaN or inf "
            f"value(s), the first in row {first}; drop or impute those rows first"
        )


def check_range(name: str, a, dtype: str) -> float:
    """Values that overflow to inf in ``dtype`` (the one a network computes in) are
    refused here, not reported later as a diverging learning rate or NaN predictions.
    ``a`` is read a block at a time. Returns the largest magnitude in ``a`` (0 for none)."""
    if a is None or a.shape[0] == 0:
        return 0.0
    limit = float(np.finfo(dtype).max)
    top = max(float(np.max(np.abs(chunk), initial=0.0)) for chunk in row_chunks(a))
    if top > limit:
        raise DataError(
            f"{name} has values up to {top:.3g}, beyond {dtype}'s range ({limit:.3g}); use "
            "float64, or rescale the data (standardize it)",
            setting="dtype",
        )
    return top


def split_rows(y, val_fraction: float, seed: int, stratify: bool):
    """Row indices ``(train, validation)`` of a held-out split of the rows of ``y``
    (stratified by ``y`` for classes), in scikit-learn's ``train_test_split`` order;
    ``(None, None)`` for ``val_fraction = 0``, which keeps every row, in order, for
    training."""
    if val_fraction == 0.0:
        return None, None
    n = y.shape[0]
    held = math.ceil(n * val_fraction)
    if held >= n:
        raise DataError(
            f"holding out {val_fraction:g} of {n} rows for validation leaves none to train "
            "on; hold out less, or 0",
            setting="val_split",
        )
    if stratify:
        counts = np.bincount(y)
        present = counts[counts > 0]
        if present.min() < 2 or held < len(present) or n - held < len(present):
            raise DataError(
                f"a stratified split of {n} rows into {n - held} for training and {held} for "
                f"validation needs every class in both, but {len(present)} classes with as "
                f"few as {present.min()} row(s) do not fit; hold out another fraction, or 0",
                setting="val_split",
            )
    return _train_test_split(n, held, seed, y if stratify else None)


# scikit-learn's train_test_split(np.arange(n), test_size=f, random_state=seed,
# stratify=...) for a float f, ported to NumPy: its ShuffleSplit and StratifiedShuffleSplit
# draws from np.random.RandomState(seed), call for call, so a run folder made when the split
# came from scikit-learn resumes on the same rows (tests/test_data_split.py compares the
# two). With n_test = ceil(f n) and n_train = n - n_test:
#   unstratified: one permutation of n; the first n_test rows are the test rows, the next
#     n_train the training rows.
#   stratified: classes in sorted order, each one's rows in row order; rows per class for
#     training and then for testing from _approximate_mode; a permutation of each class's
#     rows, its first rows to training, the next to testing; each side permuted at the end.


def _train_test_split(n: int, n_test: int, seed: int, y=None) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices (int64) of scikit-learn's train_test_split."""
    n_train = n - n_test
    rng = np.random.RandomState(seed)  # the legacy generator: scikit-learn draws from it
    if y is None:
        permutation = rng.permutation(n)
        return permutation[n_test : n_test + n_train], permutation[:n_test]
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    y_indices = y_indices.reshape(-1)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(classes.shape[0]):
        permutation = rng.permutation(class_counts[i])
        rows = class_indices[i].take(permutation, mode="clip")
        train.extend(rows[: n_i[i]])
        test.extend(rows[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """scikit-learn's utils.extmath._approximate_mode: rows per class of ``n_draws``, in
    proportion to ``class_counts``, rounded down, the rest given by largest remainder, ties
    broken by ``rng``."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        values = np.sort(np.unique(remainder))[::-1]
        for value in values:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
