"""scripts/train.py end to end in temporary folders: files, JSON, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import _cli
import numpy as np
import pytest
import train
from helpers import assert_close

import backends
from model.checkpoint import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    """Run the CLI as a user would (errors become exit status 2); returns (rc, out, err)."""
    rc = _cli.run(train.main, list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def run_json(capsys, tmp_path, *argv):
    rc, out, err = run(capsys, "--device", "cpu", "--out", str(tmp_path / "run"), "--json", *argv)
    assert rc == 0, err
    return json.loads(out)  # exactly one JSON object on stdout


def test_default_job_writes_a_run_folder_and_reports(capsys, tmp_path):
    result = run_json(capsys, tmp_path, "--epochs", "5")
    for key in (
        "config",
        "device",
        "dtype",
        "epochs",
        "final_train_loss",
        "metrics",
        "wall_seconds",
        "paths",
    ):
        assert key in result
    assert result["device"] == "cpu" and result["dtype"] == "float32" and result["epochs"] == 5
    run_dir = tmp_path / "run"
    assert {p.name for p in run_dir.iterdir()} == {"metrics.json", "loss.png", "checkpoint.npz"}
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 5
    assert len(result["metrics"]["history"]["val_accuracy"]) == 5


def test_default_config_reaches_95_percent_on_digits(capsys, tmp_path):
    rc, out, _ = run(capsys, "--device", "cpu", "--out", str(tmp_path / "r"), "--quiet")
    assert rc == 0
    assert out.count("\n") == 1  # one summary line
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.95


def test_resume_is_bit_identical(capsys, tmp_path):
    common = ["--device", "cpu", "--batch-size", "32", "--quiet", "--dtype", "float64"]
    assert (
        run(
            capsys,
            *common,
            "--epochs",
            "10",
            "--out",
            str(tmp_path / "a"),
            "--save",
            str(tmp_path / "a.npz"),
        )[0]
        == 0
    )
    assert run(capsys, *common, "--epochs", "5", "--out", str(tmp_path / "b"))[0] == 0
    assert (
        run(
            capsys,
            "--resume",
            str(tmp_path / "b"),
            "--epochs",
            "10",
            "--quiet",
            "--device",
            "cpu",
            "--save",
            str(tmp_path / "b.npz"),
        )[0]
        == 0
    )
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a.files == b.files == ["W1", "b1", "W2", "b2"]
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert len(metrics["metrics"]["history"]["loss"]) == 10


def test_checkpoint_from_another_device_resumes_on_cpu(capsys, tmp_path):
    assert (
        run(
            capsys,
            "--device",
            "strict:device1",
            "--epochs",
            "2",
            "--quiet",
            "--out",
            str(tmp_path / "r"),
        )[0]
        == 0
    )
    result = run_json(
        capsys, tmp_path, "--resume", str(tmp_path / "r" / "checkpoint.npz"), "--epochs", "3"
    )
    assert result["device"] == "cpu" and result["epochs"] == 3


def _numpy_reference(X, labels, W1, b1, W2, b2, lr, epochs):
    """Full-batch gd on tanh hidden + softmax cross-entropy, written out in plain NumPy."""
    onehot = np.eye(W2.shape[1])[labels]
    for _ in range(epochs):
        H = np.tanh(X @ W1 + b1)
        logits = H @ W2 + b2
        P = np.exp(logits - logits.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        D2 = (P - onehot) / len(X)
        D1 = (D2 @ W2.T) * (1 - H**2)
        W2, b2 = W2 - lr * H.T @ D2, b2 - lr * D2.sum(axis=0)
        W1, b1 = W1 - lr * X.T @ D1, b1 - lr * D1.sum(axis=0)
    return W1, b1, W2, b2


def test_init_file_then_gd_equals_plain_numpy(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    init = {
        "W1": rng.normal(size=(4, 5)),
        "b1": rng.normal(size=5),
        "W2": rng.normal(size=(5, 3)),
        "b2": rng.normal(size=3),
    }
    np.savez(tmp_path / "init.npz", **init)
    run_json(
        capsys,
        tmp_path,
        "--data",
        str(tmp_path / "data.npz"),
        "--hidden",
        "5",
        "--activation",
        "tanh",
        "--optimizer",
        "gd",
        "--lr",
        "0.3",
        "--epochs",
        "25",
        "--dtype",
        "float64",
        "--val-split",
        "0",
        "--init",
        str(tmp_path / "init.npz"),
        "--save",
        str(tmp_path / "out.npz"),
    )
    expected = _numpy_reference(X, y, *init.values(), lr=0.3, epochs=25)
    got = np.load(tmp_path / "out.npz")
    for name, value in zip(init, expected, strict=True):
        assert_close(got[name], value, 1e-10)


def test_user_csv_and_npz(capsys, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    target = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    np.savetxt(tmp_path / "d.csv", np.c_[X, target], delimiter=",", header="a,b,c,t", comments="")
    reg = run_json(
        capsys,
        tmp_path,
        "--data",
        str(tmp_path / "d.csv"),
        "--model",
        "mlp",
        "--hidden",
        "",
        "--optimizer",
        "gd",
        "--lr",
        "0.1",
        "--epochs",
        "300",
    )
    assert reg["config"]["hidden"] == [] and reg["metrics"]["test"]["loss"] < 1e-3
    np.savez(tmp_path / "d.npz", X=X, y=(target > 0).astype(int))
    cls = run_json(capsys, tmp_path, "--data", str(tmp_path / "d.npz"), "--epochs", "100")
    assert cls["metrics"]["test"]["accuracy"] >= 0.9


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_breast_cancer_logistic_regression(capsys, tmp_path, device):
    """0/1 labels become float targets of the training dtype (strict refuses mixing)."""
    result = run_json(
        capsys,
        tmp_path,
        "--device",
        device,
        "--dataset",
        "breast-cancer",
        "--model",
        "logistic",
        "--standardize",
        "--optimizer",
        "gd",
        "--lr",
        "0.5",
        "--epochs",
        "300",
    )
    assert result["metrics"]["test"]["accuracy"] >= 0.95


def _bad_inputs(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"
    np.savez(good, X=rng.normal(size=(30, 3)), y=rng.integers(0, 3, 30))
    nan_x = rng.normal(size=(30, 3))
    nan_x[4, 1] = np.nan
    np.savez(tmp_path / "nan_x.npz", X=nan_x, y=rng.integers(0, 3, 30))
    np.savez(tmp_path / "inf_y.npz", X=rng.normal(size=(30, 3)), y=np.r_[np.inf, np.zeros(29)])
    np.savez(tmp_path / "rows.npz", X=rng.normal(size=(30, 3)), y=rng.integers(0, 3, 29))
    np.savez(tmp_path / "frac.npz", X=rng.normal(size=(30, 3)), y=np.full(30, 0.5))
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    np.savez(
        tmp_path / "wrong_shape.npz",
        W1=np.zeros((3, 7)),
        b1=np.zeros(7),
        W2=np.zeros((7, 3)),
        b2=np.zeros(3),
    )
    np.savez(tmp_path / "not_ckpt.npz", W1=np.zeros((3, 7)))
    data = ["--data", str(good)]
    return {
        "missing data file": (["--data", str(tmp_path / "nope.csv")], "no such file"),
        "unreadable data": (["--data", str(tmp_path / "garbage.npz")], "unreadable"),
        "NaN in X": (
            ["--data", str(tmp_path / "nan_x.npz")],
            "NaN or inf value(s), the first in row 4",
        ),
        "inf in y": (
            ["--data", str(tmp_path / "inf_y.npz"), "--loss", "mse"],
            "y has 1 NaN or inf",
        ),
        "row counts differ": (["--data", str(tmp_path / "rows.npz")], "X has 30 rows but y has 29"),
        "labels out of range for bce": (
            [*data, "--loss", "bce"],
            "label 2 is out of range for bce",
        ),
        "fractional labels": (
            ["--data", str(tmp_path / "frac.npz"), "--loss", "cross_entropy"],
            "needs integer class labels",
        ),
        "init shape mismatch": (
            [*data, "--init", str(tmp_path / "wrong_shape.npz")],
            "W1 has shape (3, 7) but the model (3, 64, 3) needs (3, 64)",
        ),
        "corrupt checkpoint": (["--resume", str(tmp_path / "garbage.npz")], "corrupt or truncated"),
        "not a checkpoint": (
            ["--resume", str(tmp_path / "not_ckpt.npz")],
            "not a handgrad checkpoint",
        ),
        "unknown device": ([*data, "--device", "tpu"], "unknown device 'tpu'; valid devices"),
    }


BAD_INPUTS = (
    "missing data file",
    "unreadable data",
    "NaN in X",
    "inf in y",
    "row counts differ",
    "labels out of range for bce",
    "fractional labels",
    "init shape mismatch",
    "corrupt checkpoint",
    "not a checkpoint",
    "unknown device",
)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, case):
    cases = _bad_inputs(tmp_path)
    assert set(cases) == set(BAD_INPUTS)
    argv, message = cases[case]
    if "--device" not in argv:
        argv = [*argv, "--device", "cpu"]
    rc, out, err = run(capsys, *argv, "--out", str(tmp_path / "run"), "--epochs", "1")
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_truncated_checkpoint_is_refused(capsys, tmp_path):
    assert (
        run(capsys, "--device", "cpu", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r"))[0]
        == 0
    )
    ckpt = tmp_path / "r" / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    rc, _, err = run(capsys, "--resume", str(tmp_path / "r"), "--device", "cpu")
    assert rc == 2 and "corrupt or truncated" in err


@pytest.mark.parametrize("situation", ["no cupy", "no gpu"])
def test_cuda_without_gpu_exits_2_naming_the_fix(capsys, tmp_path, monkeypatch, situation):
    if situation == "no cupy":
        monkeypatch.setitem(sys.modules, "cupy", None)
        expected = "'.[cuda12]'"
    else:
        import types

        fake = types.ModuleType("cupy")

        def fail():
            raise RuntimeError("cudaErrorInsufficientDriver")

        fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=fail))
        monkeypatch.setitem(sys.modules, "cupy", fake)
        expected = "cudaErrorInsufficientDriver"
    backends.probe_cuda.cache_clear()
    try:
        rc, _, err = run(capsys, "--device", "cuda", "--out", str(tmp_path / "r"))
    finally:
        backends.probe_cuda.cache_clear()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err


def test_cuda_error_is_one_line_from_the_real_entry_point():
    code = "import sys; sys.modules['cupy'] = None; sys.path.insert(0, 'scripts')\n"
    code += "sys.argv = ['train.py', '--device', 'cuda']\n"
    code += "import runpy; runpy.run_path('scripts/train.py', run_name='__main__')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "'.[cuda12]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_divergence_names_epoch_and_keeps_last_finite_checkpoint(capsys, tmp_path):
    rc, _, err = run(
        capsys,
        "--device",
        "cpu",
        "--dataset",
        "regression",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--epochs",
        "50",
        "--out",
        str(tmp_path / "r"),
    )
    assert rc == 2
    assert "diverged" in err and "at epoch" in err and "--lr 100000" in err
    with np.load(tmp_path / "r" / "checkpoint.npz") as ckpt:
        meta = json.loads(str(ckpt["meta"]))
        assert all(np.all(np.isfinite(ckpt[k])) for k in ("W1", "W2"))
    assert meta["epoch"] >= 1 and all(np.isfinite(meta["history"]["loss"]))


def test_ctrl_c_saves_a_checkpoint_that_resumes(capsys, tmp_path, monkeypatch):
    real_fit = train.fit

    def fit_then_interrupt(*args, **kwargs):
        real_fit(*args, **{**kwargs, "epochs": kwargs["start_epoch"] + 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fit", fit_then_interrupt)
    rc, _, err = run(capsys, "--device", "cpu", "--epochs", "10", "--out", str(tmp_path / "r"))
    assert rc == 130 and "interrupted after epoch 2" in err and "--resume" in err
    monkeypatch.setattr(train, "fit", real_fit)
    result = run_json(capsys, tmp_path, "--resume", str(tmp_path / "r"), "--epochs", "4")
    assert result["epochs"] == 4


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"old complete file")

    def crash(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]


def test_help_explains_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--device",
        "--dtype",
        "--model",
        "--hidden",
        "--activation",
        "--loss",
        "--optimizer",
        "--lr",
        "--epochs",
        "--batch-size",
        "--weight-decay",
        "--seed",
        "--dataset",
        "--data",
        "--standardize",
        "--val-split",
        "--out",
        "--save",
        "--init",
        "--resume",
        "--json",
        "--quiet",
    ):
        assert flag in text
