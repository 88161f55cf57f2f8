"""Reading the user's data files (model/data.py, model/streaming.py): what a new user's
trial found (issue 24): a byte-order mark, a pipe or device given as the file, a suffix
in capitals."""

from __future__ import annotations

import numpy as np
import pytest

from model.data import load_features, load_file

BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, written by Excel's "CSV UTF-8" and others


def _table(rows: int = 40) -> np.ndarray:
    """Rows of (two features, a 0/1 label), the first row's features not integers."""
    rng = np.random.default_rng(24)
    X = rng.normal(size=(rows, 2)).round(3)
    X[0] = [0.125, -2.5]
    return np.c_[X, np.arange(rows) % 2]


def _csv_bytes(table: np.ndarray, header: str | None = None) -> bytes:
    lines = [] if header is None else [header]
    lines += [",".join(repr(float(v)) for v in row) for row in table]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("header", [None, "a,b,label"])
def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path, header):
    """A headerless CSV with a BOM had its first row taken as a header: 39 of 40 rows
    trained, and predict.py wrote 39 predictions for 40 rows."""
    table = _table()
    path = tmp_path / "bom.csv"
    path.write_bytes(BOM + _csv_bytes(table, header))
    X, y = load_file(path)
    assert X.shape == (40, 2) and y.shape == (40,)
    np.testing.assert_array_equal(X, table[:, :2])  # the first row parsed, not skipped
    np.testing.assert_array_equal(y, table[:, 2])
    X, labels = load_features(path, 2)  # what scripts/predict.py reads
    np.testing.assert_array_equal(X, table[:, :2])
    np.testing.assert_array_equal(labels, table[:, 2])
    X, labels = load_features(path, 3)  # no label column: all three are features
    assert X.shape == (40, 3) and labels is None
    np.testing.assert_array_equal(X, table)


def test_a_byte_order_mark_with_a_header_given(tmp_path):
    table = _table(5)
    path = tmp_path / "bom.csv"
    path.write_bytes(BOM + _csv_bytes(table))
    X, _ = load_file(path, header=False)
    np.testing.assert_array_equal(X, table[:, :2])
    X, _ = load_file(path, header=True)  # the user says the first row is a header
    np.testing.assert_array_equal(X, table[1:, :2])
