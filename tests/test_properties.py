"""Random data files and random flag values through scripts/train.py: the result is either
exit 0 with a finite loss, or exit 2 with exactly one ``error:`` line. Never a traceback,
never exit 1 (which would mean a bug)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import _cli
import numpy as np
import train
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

ROWS = st.integers(0, 40)
FEATURES = st.integers(0, 4)
VALUE = st.floats(-1e6, 1e6, allow_nan=False)
SPECIAL = st.sampled_from([None, None, None, float("nan"), float("inf"), -float("inf")])


@st.composite
def data_file(draw, folder: Path):
    """A CSV or NPZ file with random shape, dtype, values and labels (or garbage)."""
    n, d = draw(ROWS), draw(FEATURES)
    kind = draw(st.sampled_from(["csv", "csv", "csv-header", "npz", "npz", "empty", "garbage"]))
    X = np.array(draw(st.lists(VALUE, min_size=n * d, max_size=n * d))).reshape(n, d)
    special = draw(SPECIAL)
    if special is not None and X.size:
        X.flat[draw(st.integers(0, X.size - 1))] = special
    labels = draw(st.sampled_from(["classes", "classes", "big classes", "reals", "constant"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    y = {
        "classes": rng.integers(0, 3, n).astype(float),
        "big classes": rng.choice([3.0, 1e5, 1e9], n),
        "reals": rng.normal(size=n),
        "constant": np.full(n, 2.0),
    }[labels]
    if kind == "empty":
        (folder / "d.csv").write_text("")
        return folder / "d.csv"
    if kind == "garbage":
        (folder / "d.npz").write_bytes(draw(st.binary(max_size=64)))
        return folder / "d.npz"
    if kind == "npz":
        dtype = draw(st.sampled_from(["float64", "float32", "int64", "bool", "complex128"]))
        with np.errstate(invalid="ignore"), contextlib.suppress(Warning):
            X = X.astype(dtype) if dtype != "int64" else np.nan_to_num(X).astype(dtype)
        np.savez(folder / "d.npz", X=X, y=y)
        return folder / "d.npz"
    header = "".join(f"f{i}," for i in range(d)) + "y" if kind == "csv-header" else ""
    np.savetxt(folder / "d.csv", np.c_[X, y], delimiter=",", header=header, comments="")
    return folder / "d.csv"


FLAGS = st.fixed_dictionaries(
    {},
    optional={
        "--lr": st.sampled_from(["0", "-1", "nan", "inf", "1e-3", "0.1", "1e30"]),
        "--epochs": st.sampled_from(["-1", "0", "1", "3"]),
        "--batch-size": st.sampled_from(["0", "1", "5", "100"]),
        "--val-split": st.sampled_from(["-0.5", "0", "0.3", "0.99", "1"]),
        "--weight-decay": st.sampled_from(["-1", "0", "0.01", "nan"]),
        "--loss": st.sampled_from(["mse", "sse", "bce", "cross_entropy"]),
        "--model": st.sampled_from(["mlp", "neuron", "relu-neuron", "logistic"]),
        "--hidden": st.sampled_from(["", "3", "0", "2,2"]),
        "--optimizer": st.sampled_from(["gd", "sgd", "momentum", "nesterov", "adam"]),
        "--seed": st.sampled_from(["-1", "0", "7", "4294967296"]),
        "--dtype": st.sampled_from(["float32", "float64"]),
    },
)


def _train(argv):
    """(exit status, stdout, stderr) of train.py with ``argv``, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = _cli.run(train.main, argv, train.FLAGS)
        except SystemExit as exc:  # argparse
            rc = exc.code
    event(f"exit {rc}")
    return rc, out.getvalue(), err.getvalue()


def _assert_trained_or_refused(rc, out, err):
    assert "Traceback" not in err, err
    if rc == 0:
        assert math.isfinite(json.loads(out)["final_train_loss"]), out
    else:
        lines = err.splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
        if "training diverged" in err:  # --json prints a diverged run's summary too
            assert json.loads(out)["status"] == "diverged", out
        else:
            assert out == ""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), loss=st.sampled_from([None, "mse", "bce", "cross_entropy"]),
       standardize=st.booleans())  # fmt: skip
def test_random_data_is_trained_or_refused_in_one_line(data, loss, standardize):
    with tempfile.TemporaryDirectory() as folder:
        path = data.draw(data_file(Path(folder)))
        argv = ["--data", str(path), "--device", "cpu", "--json", "--epochs", "2",
                "--out", str(Path(folder) / "run")]  # fmt: skip
        argv += (["--loss", loss] if loss else []) + (["--standardize"] if standardize else [])
        _assert_trained_or_refused(*_train(argv))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=FLAGS)
def test_random_flag_values_are_trained_or_refused_in_one_line(flags, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flags")
    argv = ["--dataset", "iris", "--device", "cpu", "--json", "--out", str(folder / "run")]
    argv += [item for pair in flags.items() for item in pair]
    _assert_trained_or_refused(*_train(argv))
