"""Every bad input a user's trial found, through scripts/train.py as a user runs it: exit
status 2, one ``error:`` line on stderr naming the problem (and the flag), nothing on
stdout, no traceback, no run folder made, and an existing run folder left untouched."""

from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path

import _cli
import numpy as np
import pytest
import train

from model.preprocessing import MAX_CLASSES


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad (and one good) input file, made once."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))

    def npz(name, **arrays):
        np.savez(d / name, **arrays)
        return str(d / name)

    def npy(name, table):
        np.save(d / name, table)
        return str(d / name)

    def text(name, content):
        (d / name).write_text(content)
        return str(d / name)

    nan_x = X.copy()
    nan_x[4, 1] = np.nan
    spread = np.arange(400, dtype=float)
    paths = {
        "good": npz("good.npz", X=X, y=rng.integers(0, 3, 30)),
        "nan_x": npz("nan_x.npz", X=nan_x, y=rng.integers(0, 3, 30)),
        "inf_y": npz("inf_y.npz", X=X, y=np.r_[np.inf, np.zeros(29)]),
        "rows": npz("rows.npz", X=X, y=rng.integers(0, 3, 29)),
        "frac": npz("frac.npz", X=X, y=np.full(30, 0.5)),
        "ints": npz("ints.npz", X=rng.normal(size=(400, 3)), y=spread),  # like diabetes
        "many": npz(
            "many.npz", X=rng.normal(size=(MAX_CLASSES + 1, 2)), y=np.arange(MAX_CLASSES + 1)
        ),
        "wide_targets": npz("wide.npz", X=X, y=np.linspace(-3, 3, 30)),
        "no_features": npz("nofeat.npz", X=np.zeros((30, 0)), y=rng.integers(0, 3, 30)),
        "garbage": text("garbage.npz", "not a zip file at all"),
        "garbage_npy": text("garbage.npy", "not an npy file at all"),
        "empty_npy": text("empty.npy", ""),
        "flat_npy": npy("flat.npy", np.arange(5.0)),
        "nan_npy": npy("nan.npy", np.column_stack([nan_x, np.zeros(30)])),
        "empty_csv": text("empty.csv", ""),
        "header_only": text("header.csv", "a,b,y\n"),
        "one_column": text("one.csv", "y\n1\n2\n"),
        "wrong_shape": npz(
            "wrong_shape.npz",
            W1=np.zeros((3, 7)),
            b1=np.zeros(7),
            W2=np.zeros((7, 3)),
            b2=np.zeros(3),
        ),
        "strings": npz(
            "strings.npz",
            W1=np.full((3, 64), "a"),
            b1=np.zeros(64),
            W2=np.zeros((64, 3)),
            b2=np.zeros(3),
        ),
        "complex": npz(
            "complex.npz",
            W1=np.zeros((3, 64)) + 1j,
            b1=np.zeros(64),
            W2=np.zeros((64, 3)),
            b2=np.zeros(3),
        ),
        "params_only": npz("params.npz", W1=np.zeros((3, 7))),
        "old_format": npz(
            "old.npz",
            W1=np.zeros((64, 64)),
            meta=np.array(json.dumps({"format": "handgrad-checkpoint-1"})),
        ),
        "a_file": text("a_file", "I am a file"),
        "huge_labels": npz("huge_labels.npz", X=X, y=np.r_[np.zeros(15), np.full(15, 1e30)]),
        "huge_x": npz("huge_x.npz", X=X * 1e300, y=rng.integers(0, 3, 30)),
        "rare_class": npz("rare.npz", X=X, y=np.r_[np.zeros(29), 1]),
        "existing_model": npz("existing.npz", W1=np.zeros(1)),
    }
    return paths


def cases(f, tmp):
    """case -> (argv, text the error line must contain)."""
    good = ["--data", f["good"]]
    return {
        "missing data file": (["--data", str(tmp / "nope.csv")], "no such file"),
        "data is a folder": (["--data", str(tmp)], f"data file {tmp}: a folder; pass an"),
        "data is not an npz": (["--data", f["garbage"]], "is not an .npz archive"),
        "data is not an npy": (["--data", f["garbage_npy"]], "is not a .npy file; write it"),
        "npy of one dimension": (["--data", f["flat_npy"]], "a .npy needs one 2-D array"),
        "NaN in an npy": (
            ["--data", f["nan_npy"]],
            "X has 1 NaN or inf value(s), the first in row 4",
        ),
        "NaN in X": (["--data", f["nan_x"]], "NaN or inf value(s), the first in row 4"),
        "inf in y": (["--data", f["inf_y"], "--loss", "mse"], "y has 1 NaN or inf"),
        "row counts differ": (["--data", f["rows"]], "X has 30 rows but y has 29"),
        "3 classes for bce": ([*good, "--loss", "bce"], "bce needs exactly 2 classes, y holds 3"),
        "10 classes for logistic": (["--model", "logistic"], "more than 2 classes (--model)"),
        "fractional labels": (
            ["--data", f["frac"], "--loss", "cross_entropy"],
            "class labels must be integers, got 0.5",
        ),
        "integer regression target": (["--data", f["ints"]], "400 distinct integer values"),
        "too many classes": (
            ["--data", f["many"], "--loss", "cross_entropy"],
            "cross_entropy needs 2 to 10000 classes",
        ),
        "neuron target outside [0, 1]": (
            ["--data", f["wide_targets"], "--model", "neuron"],
            "targets must lie in [0, 1]",
        ),
        "no feature columns": (["--data", f["no_features"]], "X has no feature columns"),
        "empty csv": (["--data", f["empty_csv"]], "is empty"),
        "header-only csv": (["--data", f["header_only"]], "has a header but no data rows"),
        "one-column csv": (["--data", f["one_column"]], "has 1 column(s)"),
        "init shape mismatch": (
            [*good, "--init", f["wrong_shape"]],
            "W1 has shape (3, 7) but the model (3, 64, 3) needs (3, 64)",
        ),
        "init of strings": ([*good, "--init", f["strings"]], "W1 holds <U1 values"),
        "init of complex numbers": ([*good, "--init", f["complex"]], "W1 holds complex128"),
        "resume garbage": (["--resume", f["garbage"]], "is not an .npz archive"),
        "resume a parameter file": (["--resume", f["params_only"]], "holds no model description"),
        "resume an old checkpoint": (["--resume", f["old_format"]], "handgrad-checkpoint-1"),
        "unknown device": ([*good, "--device", "tpu"], "unknown device 'tpu'; valid devices"),
        "lr 0": (["--lr", "0"], "lr must be a number > 0, got 0.0 (--lr)"),
        "lr -1": (["--lr", "-1"], "lr must be a number > 0, got -1.0 (--lr)"),
        "lr nan": (["--lr", "nan"], "lr must be a number (finite), got nan (--lr)"),
        "lr inf": (["--lr", "inf"], "lr must be a number (finite), got inf (--lr)"),
        "negative weight decay": (["--weight-decay", "-1"], "weight_decay must be a number >= 0"),
        "epochs 0": (["--epochs", "0"], "epochs must be an integer >= 1"),
        "epochs 1e8": (["--epochs", "100000000"], "<= 10000000"),
        "batch size 0": (["--batch-size", "0"], "batch_size must be an integer >= 1"),
        "gd with minibatches": (["--optimizer", "gd", "--batch-size", "8"], "full-batch"),
        "val split 1": (["--val-split", "1"], "val_split must be in [0, 1)"),
        "val split -0.1": (["--val-split", "-0.1"], "val_split must be a number >= 0"),
        "seed -1": (["--seed", "-1"], "seed must be an integer >= 0"),
        "checkpoint every 0": (["--checkpoint-every", "0"], "checkpoint_every must be"),
        "hidden for a single unit": (["--model", "logistic", "--hidden", "4"], "takes no hidden"),
        "loss of a single unit": (["--model", "neuron", "--loss", "mse"], "trains with the loss"),
        "huge hidden layer": (["--hidden", "100000000"], "GiB"),
        "hidden not a number": (["--hidden", "abc"], "invalid width list value: 'abc'"),
        "unknown flag": (["--learning-rate", "0.1"], "unrecognized arguments"),
        "resume with init": (["--resume", "x", "--init", "y"], "exclude each other"),
        "empty data path": (["--data", ""], "the data file path is empty"),
        "empty resume path": (["--resume", ""], "the path of the run to resume is empty"),
        "empty init path": (["--init", ""], "the init path is empty"),
        "empty save path": (["--save", ""], "the save path is empty"),
        "empty out path": (["--out", ""], "the run folder path is empty"),
        "out under a file": (["--out", f["a_file"] + "/run"], "not a writable folder"),
        "out is a file": (["--out", f["a_file"]], "exists and is not a folder"),
        "out exists": (["--out", str(tmp / "previous")], "already exists; resume it"),
        "save under a file": (["--save", f["a_file"] + "/m.npz"], "not a writable folder"),
        "save is a folder": (["--save", str(tmp)], "is a folder"),
        "save over the data": ([*good, "--save", f["good"]], "is an input of this run"),
        "save over the init file": (
            [*good, "--init", f["wrong_shape"], "--save", f["wrong_shape"]],
            "is an input of this run",
        ),
        "save over the run's checkpoint": (
            ["--out", str(tmp / "new"), "--save", str(tmp / "new" / "checkpoint.npz")],
            "one of the run folder's own files",
        ),
        "save over an existing file": (["--save", f["existing_model"]], "already exists"),
        "save without .npz": (["--save", str(tmp / "model.txt")], "end its name with .npz"),
        "labels beyond int64": (["--data", f["huge_labels"]], "does not fit in a 64-bit integer"),
        "X beyond float32": (["--data", f["huge_x"]], "beyond float32's range"),
        "X too large to standardize": (
            ["--data", f["huge_x"], "--dtype", "float64", "--standardize"],
            "column 0 of X has values too large to standardize",
        ),
        "empty npy": (["--data", f["empty_npy"]], "is not a .npy file"),
        "validation takes every row": (["--val-split", "0.9999"], "leaves none to train on"),
        "a class of one row": (["--data", f["rare_class"]], "as few as 1 row(s)"),
        "empty width in hidden": (["--hidden", "3,,4"], "invalid width list value"),
        "abbreviated flag": (["--ep", "3"], "unrecognized arguments: --ep"),
        "cuda with an empty index": (["--device", "cuda:"], "unknown device 'cuda:'"),
        "sweep with an empty value": (["--sweep", "lr=0.1,,0.2"], "has an empty value"),
        "sweep listing a value twice": (["--sweep", "seed=0,0"], "lists a value twice"),
        "lr beside a sweep of lr": (["--lr", "0.1", "--sweep", "lr=0.1,0.2"], "both set it"),
        "sweep too large": (
            ["--sweep", "lr=" + ",".join(f"{1e-3 * (i + 1):g}" for i in range(4097))],
            "more than the 4096",
        ),
        "save-all into a folder with files": (
            ["--sweep", "lr=0.1,0.2", "--save-all", str(tmp)],
            "already holds files",
        ),
        "save-all on a plain resume": (
            ["--resume", str(tmp / "previous"), "--epochs", "5", "--save-all", str(tmp / "a")],
            "is not a sweep",
        ),
    }


CASES = list(cases(collections.defaultdict(str), Path(".")))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A finished run folder that no bad input may change."""
    folder = tmp_path_factory.mktemp("work") / "previous"
    rc = _cli.run(train.main, ["--device", "cpu", "--epochs", "1", "--quiet", "--out", str(folder)])
    assert rc == 0
    return folder


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_trains_nothing(
    capsys, monkeypatch, files, previous, case
):
    tmp = previous.parent
    monkeypatch.chdir(tmp)  # a default runs/<timestamp> would appear here
    before = _digest(previous)
    argv, message = cases(files, tmp)[case]
    if "--device" not in argv:
        argv = [*argv, "--device", "cpu"]
    if "--out" not in argv and "--resume" not in argv:
        argv = [*argv, "--out", str(tmp / "new")]
    try:
        rc = _cli.run(train.main, argv, train.FLAGS)
    except SystemExit as exc:  # argparse exits by itself
        rc = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert re.search(r"(^| |\()--[a-z]", lines[0]), "the line names no flag"
    assert not (tmp / "new").exists() and not (tmp / "runs").exists()
    assert _digest(previous) == before


def test_device_from_the_environment_is_named(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HANDGRAD_DEVICE", "bogus")
    rc = _cli.run(train.main, ["--out", str(tmp_path / "r")], train.FLAGS)
    err = capsys.readouterr().err
    assert rc == 2 and "HANDGRAD_DEVICE='bogus'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("case", ["lr nan", "hidden not a number", "missing data file"])
def test_the_real_entry_point_gives_the_same_one_line(files, previous, case):
    """A few of the cases above through `python scripts/train.py` itself."""
    import subprocess
    import sys

    tmp = previous.parent
    argv, message = cases(files, tmp)[case]
    proc = subprocess.run(
        [sys.executable, str(Path(train.__file__)), *argv, "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not (tmp / "runs").exists()


@pytest.mark.parametrize("situation", ["no cupy", "no gpu"])
def test_cuda_without_a_gpu_is_one_line_naming_the_fix(capsys, monkeypatch, tmp_path, situation):
    import sys
    import types

    import backends

    if situation == "no cupy":
        monkeypatch.setitem(sys.modules, "cupy", None)
        expected = "pip install -e '.[train,cuda12]'"
    else:
        fake = types.ModuleType("cupy")

        def fail():
            raise RuntimeError("cudaErrorInsufficientDriver")

        fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=fail))
        monkeypatch.setitem(sys.modules, "cupy", fake)
        expected = "cudaErrorInsufficientDriver"
    backends.probe_cuda.cache_clear()
    try:
        rc = _cli.run(train.main, ["--device", "cuda", "--out", str(tmp_path / "r")], train.FLAGS)
    finally:
        backends.probe_cuda.cache_clear()
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and expected in err and "(--device)" in err, err
    assert not (tmp_path / "r").exists()


def test_an_unusable_default_run_folder_is_found_before_the_data_is_read(
    capsys, monkeypatch, tmp_path
):
    """No --out: runs/<timestamp> must be creatable, checked before any data is loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the run folders would go")
    rc = _cli.run(train.main, ["--device", "cpu", "--epochs", "1"], train.FLAGS)
    err = capsys.readouterr().err
    assert rc == 2 and err.splitlines() == [
        "error: cannot write runs: runs is not a writable folder (--out)"
    ], err
