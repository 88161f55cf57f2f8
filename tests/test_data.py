"""Reading the user's data files (model/data.py, model/streaming.py): what a new user's
trial found (issue 24): a byte-order mark, a pipe or device given as the file, a suffix
in capitals; and what a later trial found in CSVs: a bad first row dropped as a header,
quoted numbers and other separators misread."""

from __future__ import annotations

import os
import re
from pathlib import Path

import _cli
import numpy as np
import pytest
import train

from model.data import DataError, load_features, load_file
from model.streaming import map_data, open_memmap

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


def _not_regular(tmp_path, kind: str) -> Path:
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes here")
        os.mkfifo(tmp_path / "pipe.csv")  # reading it would block until a writer comes
        return tmp_path / "pipe.csv"
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    return Path("/dev/zero")  # reading it never ends


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_pipe_or_device_is_not_called_missing(tmp_path, kind):
    """A FIFO or /dev/zero given as the data was reported as "no such file"."""
    path = _not_regular(tmp_path, kind)
    message = f"{path}: not a regular file (a pipe, device or socket); pass an existing"
    for read in (load_file, lambda p: load_features(p, 2), open_memmap):
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read(path)
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "absent.csv")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_named_like_a_streamable_file_is_refused_by_the_command(tmp_path, capsys):
    """train.py first tries to memory-map a .npy: a pipe must not be opened there either
    (it would block) and the one line says what it is."""
    os.mkfifo(tmp_path / "data.npy")
    argv = ["--data", str(tmp_path / "data.npy"), "--device", "cpu", "--out", str(tmp_path / "r")]
    assert _cli.run(train.main, argv, train.FLAGS) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: data file {tmp_path / 'data.npy'}: not a regular file (a pipe, "
        "device or socket); pass an existing .npz, .npy or .csv file (--data)\n"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("suffix", [".CSV", ".Csv", ".NPY", ".NPZ", ".Npz"])
def test_a_suffix_in_capitals_names_the_same_format(tmp_path, suffix):
    """data.CSV was refused as an unknown format '.CSV'."""
    table = _table(6)
    path = tmp_path / f"data{suffix}"
    kind = suffix.lower()
    if kind == ".csv":
        path.write_bytes(_csv_bytes(table))
    elif kind == ".npy":
        with open(path, "wb") as f:  # np.save would add ".npy" to another suffix
            np.save(f, table)
    else:
        with open(path, "wb") as f:
            np.savez(f, X=table[:, :2], y=table[:, 2])
    X, y = load_file(path)
    np.testing.assert_array_equal(X, table[:, :2])
    np.testing.assert_array_equal(y, table[:, 2])
    X, y = load_features(path, 2)
    np.testing.assert_array_equal(X, table[:, :2])
    np.testing.assert_array_equal(y, table[:, 2])
    if kind == ".csv":
        assert map_data(path) is None  # loaded, not mapped
        return
    mapped = open_memmap(path, None if kind == ".npy" else "X")
    assert isinstance(mapped, np.memmap)
    X, y = map_data(path)  # streamed as the lower-case name would be
    assert isinstance(X, np.memmap)
    np.testing.assert_array_equal(X, table[:, :2])
    np.testing.assert_array_equal(y, table[:, 2])


def test_an_unknown_suffix_is_still_refused_as_written(tmp_path):
    (tmp_path / "data.TXT").write_text("1,2\n")
    with pytest.raises(DataError, match=r"unknown format '\.TXT'; use \.npz, \.npy or \.csv"):
        load_file(tmp_path / "data.TXT")
    with pytest.raises(DataError, match=r"unknown format '\.TXT'; use \.npy or \.npz"):
        open_memmap(tmp_path / "data.TXT")


@pytest.mark.parametrize(
    "loss,y,line",
    [(None, np.full(30, 3), "every target is 3: there is nothing to learn; the data needs at "
      "least 2 different targets (--data)"),
     ("cross_entropy", np.full(30, 3), "cross_entropy needs 2 to 10000 classes, y holds 1; the "
      "data needs at least 2 classes (--data)"),
     ("bce", np.arange(30) % 3, "bce needs exactly 2 classes, y holds 3; use the loss "
      "'cross_entropy' for more than 2 classes (--loss)")],
    ids=["inferred", "cross_entropy", "bce"],
)  # fmt: skip
def test_targets_that_leave_nothing_to_learn_name_the_data(tmp_path, capsys, loss, y, line):
    """All-same targets pointed at --loss, which no value of fixes."""
    np.savez(tmp_path / "same.npz", X=np.arange(60.0).reshape(30, 2), y=y)
    argv = ["--data", str(tmp_path / "same.npz"), "--device", "cpu", "--out", str(tmp_path / "r")]
    argv += [] if loss is None else ["--loss", loss]
    assert _cli.run(train.main, argv, train.FLAGS) == 2
    assert capsys.readouterr().err == f"error: {line}\n"


GOOD_CSVS = {
    "header": "a,b,label\n0.125,-2.5,0\n1,2,1\n",
    "no header": "0.125,-2.5,0\n1,2,1\n",
    "BOM and header": "\ufeffa,b,label\n0.125,-2.5,0\n1,2,1\n",
    "quoted numbers": '"0.125","-2.5","0"\n"1","2","1"\n',
    "quoted header": '"a","b, in cm","label"\n"0.125","-2.5","0"\n1,2,1\n',
    "comments and blank lines": "# a,b,label\n\n0.125, -2.5 ,0\n# note\n1,2,1\n",
}


@pytest.mark.parametrize("text", GOOD_CSVS.values(), ids=GOOD_CSVS.keys())
def test_a_header_is_a_row_of_names_and_every_data_row_is_read(tmp_path, text):
    path = tmp_path / "good.csv"
    path.write_text(text, encoding="utf-8")
    X, y = load_file(path)
    np.testing.assert_array_equal(X, [[0.125, -2.5], [1, 2]])
    np.testing.assert_array_equal(y, [0, 1])


@pytest.mark.parametrize(
    "first,field",
    [("1,2x,0", "field 2: '2x'"),  # 3 fields where the data rows have 5
     ("5.1,3.5,1.4,0.2,O", "field 5: 'O'")],  # a letter O for a zero
)  # fmt: skip
def test_a_first_row_mixing_numbers_and_text_is_refused(tmp_path, capsys, first, field):
    """Such a row was dropped as a header and training went on, exit 0, one row fewer."""
    path = tmp_path / "f.csv"
    path.write_text(f"{first}\n4.9,3.0,1.4,0.2,0\n4.7,3.2,1.3,0.2,1\n")
    line = (
        f"the first row of {path} (line 1) mixes numbers and text ({field}): a header's fields "
        "are all names, a data row's all numbers; fix that row"
    )
    with pytest.raises(DataError, match=f"^{re.escape(line)}$"):
        load_file(path)
    argv = ["--data", str(path), "--device", "cpu", "--out", str(tmp_path / "r")]
    assert _cli.run(train.main, argv, train.FLAGS) == 2
    assert capsys.readouterr().err.startswith(f"error: {line}")


@pytest.mark.parametrize("header", [None, True])
def test_a_header_as_wide_as_the_data_rows(tmp_path, header):
    path = tmp_path / "f.csv"
    path.write_text("a,b,c,label\n\n0.125,-2.5,0\n")  # a blank line between
    line = (
        f"the header of {path} (line 1) has 4 fields but the first data row (line 3) has 3; "
        "give them the same number"
    )
    with pytest.raises(DataError, match=f"^{re.escape(line)}$"):
        load_file(path, header=header)


@pytest.mark.parametrize("sep,name", [(";", "';'"), ("\t", "tabs")])
def test_another_separator_is_named(tmp_path, sep, name):
    """A ';' or tab file had its first row taken as a header, then failed at "row 0"."""
    path = tmp_path / "f.csv"
    path.write_text(f"1.5{sep}2{sep}0\n3{sep}4{sep}1\n")
    line = (
        f"data file {path} separates its fields with {name} (line 1); handgrad reads "
        "comma-separated values: save it with ',' between fields, '.' in decimals"
    )
    for header in (None, True, False):
        with pytest.raises(DataError, match=f"^{re.escape(line)}$"):
            load_file(path, header=header)


BAD_CELLS = {
    "empty cell": ("a,b,label\n0.125,-2.5,0\n1,,1\n", "line 3, column 2 is empty; fill in that "
                   "cell or drop the row"),
    "empty cell, first row": ("0.125,,0\n1,2,1\n", "line 1, column 2 is empty; fill in that cell "
                              "or drop the row"),
    "text label": ("a,b,label\n0.125,-2.5,red\n1,2,blue\n", "line 2, column 3 (the target) holds "
                   "the text 'red'; encode text labels as integers 0..K-1, one per class"),
    "text label, no header": ("0.125,-2.5,red\n1,2,blue\n", "line 1, column 3 (the target) holds "
                              "the text 'red'; encode text labels as integers 0..K-1, one per "
                              "class"),
    "text feature": ("a,b,label\n0.125,-2.5,0\n\n# a note\n1,red,1\n", "line 5, column 2 holds "
                     "the text 'red'; a feature must be a number in every row: fix the cell, or "
                     "encode a text column as numbers or drop it"),
}  # fmt: skip


@pytest.mark.parametrize("text,where", BAD_CELLS.values(), ids=BAD_CELLS.keys())
def test_a_bad_cell_is_named_by_its_line_and_column(tmp_path, text, where):
    """np.loadtxt's "at row 2, column 3" counted rows from 0 after the header, and the fix
    said every row must hold the same number of numbers, whatever the cell held."""
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=f"^{re.escape(f'data file {path}, {where}')}$"):
        load_file(path)


def test_a_ragged_row_is_named_with_both_widths(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("a,b,label\n0.125,-2.5,0\n1,2\n")
    line = (
        f"data file {path}: every row needs 3 fields, as line 2 has, and line 3 has 2; give "
        "every row the same number of fields"
    )
    with pytest.raises(DataError, match=f"^{re.escape(line)}$"):
        load_file(path)


def test_a_cell_only_np_loadtxt_refuses_gets_its_message(tmp_path):
    """float() reads 1_0 and np.loadtxt does not: no cell is found, so its own message."""
    path = tmp_path / "f.csv"
    path.write_text("1_0,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"is unreadable \(could not convert string '1_0'"):
        load_file(path)
