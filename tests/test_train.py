"""scripts/train.py end to end in temporary folders: files, JSON, resume, what was inferred."""

from __future__ import annotations

import json
import re

import _cli
import numpy as np
import pytest
import train
from helpers import assert_close

from model.config import RunConfig


def run(capsys, *argv):
    """Run the CLI as a user would (errors become exit status 2); returns (rc, out, err)."""
    rc = _cli.run(train.main, list(argv), train.FLAGS)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def run_json(capsys, tmp_path, *argv, out="run"):
    rc, stdout, err = run(capsys, "--device", "cpu", "--out", str(tmp_path / out), "--json", *argv)
    assert rc == 0, err
    return json.loads(stdout)  # exactly one JSON object on stdout


def test_default_job_writes_a_run_folder_and_records_what_it_inferred(capsys, tmp_path):
    result = run_json(capsys, tmp_path, "--epochs", "5")
    assert result["status"] == "completed" and result["epochs"] == 5
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["loss"] == {
        "name": "cross_entropy",
        "chosen": "inferred: y holds 10 integer class labels",
        "outputs": 10,
        "classes": list(range(10)),
    }
    assert result["data"]["rows"] + result["data"]["validation_rows"] == 1797
    run_dir = tmp_path / "run"
    assert {p.name for p in run_dir.iterdir()} == {"metrics.json", "loss.png", "checkpoint.npz"}
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 5
    assert len(result["metrics"]["history"]["val_accuracy"]) == 5


def test_default_config_reaches_95_percent_on_digits(capsys, tmp_path):
    rc, out, err = run(capsys, "--device", "cpu", "--out", str(tmp_path / "r"), "--quiet")
    assert rc == 0 and err == ""
    assert out.count("\n") == 1  # one summary line
    accuracy = float(out.split("validation accuracy ")[1].split()[0])
    assert accuracy >= 0.95


def test_inferred_loss_and_classes_are_logged(capsys, tmp_path):
    rc, _, err = run(capsys, "--device", "cpu", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert rc == 0
    assert "loss: cross_entropy (inferred: y holds 10 integer class labels), 10 output(s)" in err


def test_resume_is_bit_identical_and_records_a_changed_learning_rate(capsys, tmp_path):
    common = ["--device", "cpu", "--batch-size", "32", "--quiet", "--dtype", "float64"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run(capsys, *common, "--epochs", "10", "--out", a, "--save", a + ".npz")[0] == 0
    assert run(capsys, *common, "--epochs", "5", "--out", b)[0] == 0
    rc, _, err = run(capsys, "--resume", b, "--epochs", "10", "--quiet", "--device", "cpu",
                     "--save", b + ".npz")  # fmt: skip
    assert rc == 0, err
    with np.load(a + ".npz") as fa, np.load(b + ".npz") as fb:
        assert [k for k in fa.files if k != "meta"] == ["W1", "b1", "W2", "b2"]
        for k in fa.files:
            np.testing.assert_array_equal(fa[k], fb[k])
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert len(metrics["metrics"]["history"]["loss"]) == 10
    rc, _, err = run(capsys, "--resume", b, "--epochs", "12", "--lr", "1e-4", "--quiet",
                     "--device", "cpu")  # fmt: skip
    assert rc == 0, err
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 1e-4
    assert metrics["changes"][-1] == {
        "at_epoch": 10,
        "epochs": [10, 12],
        "lr": [train.DEFAULT_LR["adam"], 1e-4],
    }


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hidden", "32"], "hidden cannot change when resuming (the run was made with 64, "),
        (["--batch-size", "32"], "(the run was made with full batch, not 32)"),
        (["--optimizer", "sgd"], "(the run was made with adam, not sgd); only epochs and lr can"),
        (["--dtype", "float64"], "dtype cannot change when resuming"),
        (["--dataset", "iris"], "dataset cannot change when resuming"),
        (["--seed", "3"], "seed cannot change when resuming"),
        (["--epochs", "3"], "already trained 3 epochs"),
        (["--epochs", "2"], "already trained 3 epochs"),
    ],
)
def test_resume_refuses_a_setting_it_cannot_apply(capsys, tmp_path, flags, message):
    r = str(tmp_path / "r")
    assert run(capsys, "--device", "cpu", "--epochs", "3", "--out", r, "--quiet")[0] == 0
    before = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    rc, out, err = run(capsys, "--resume", r, "--device", "cpu", "--epochs", "5", *flags)
    assert rc == 2 and out == "" and message in err and err.count("\n") == 1, err
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == before


def test_same_value_of_a_fixed_setting_is_fine_on_resume(capsys, tmp_path):
    r = str(tmp_path / "r")
    assert run(capsys, "--device", "cpu", "--epochs", "2", "--out", r, "--quiet")[0] == 0
    rc, _, err = run(capsys, "--resume", r, "--device", "cpu", "--epochs", "3", "--hidden",
                     "64", "--optimizer", "adam", "--quiet")  # fmt: skip
    assert rc == 0, err


def test_checkpoint_from_another_device_resumes_on_cpu(capsys, tmp_path):
    r = str(tmp_path / "r")
    assert run(capsys, "--device", "strict:device1", "--epochs", "2", "--quiet", "--out", r)[0] == 0
    result = run_json(capsys, tmp_path, "--resume", r + "/checkpoint.npz", "--epochs", "3")
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
    run_json(capsys, tmp_path, "--data", str(tmp_path / "data.npz"), "--hidden", "5",
             "--activation", "tanh", "--optimizer", "gd", "--lr", "0.3", "--epochs", "25",
             "--dtype", "float64", "--val-split", "0", "--init", str(tmp_path / "init.npz"),
             "--save", str(tmp_path / "out.npz"))  # fmt: skip
    expected = _numpy_reference(X, y, *init.values(), lr=0.3, epochs=25)
    with np.load(tmp_path / "out.npz") as got:
        for name, value in zip(init, expected, strict=True):
            assert_close(got[name], value, 1e-10)


def test_init_from_a_file_of_other_preprocessing_or_classes_is_warned_about(capsys, tmp_path):
    """A model file trained on standardized wine (classes 3, 4, 5) starts runs: the same
    preprocessing and classes say nothing; raw features, or classes 0, 1, 2, are named."""
    from model.data import load_dataset

    X, y = load_dataset("wine")
    np.savez(tmp_path / "wine.npz", X=X, y=y + 3)
    np.savez(tmp_path / "other.npz", X=X, y=y)
    common = ("--device", "cpu", "--epochs", "2", "--quiet", "--overwrite")
    wine, model = str(tmp_path / "wine.npz"), str(tmp_path / "m.npz")
    rc, _, err = run(capsys, "--data", wine, "--standardize", "--save", model,
                     "--out", str(tmp_path / "a"), *common)  # fmt: skip
    assert rc == 0, err

    def warnings(*argv):
        rc, _, err = run(capsys, "--init", str(tmp_path / "m.npz"), *argv, *common)
        assert rc == 0, err
        return [line for line in err.splitlines() if line.startswith("warning: ")]

    same = warnings(
        "--data", str(tmp_path / "wine.npz"), "--standardize", "--out", str(tmp_path / "b")
    )
    assert same == []
    (raw,) = warnings("--data", str(tmp_path / "wine.npz"), "--out", str(tmp_path / "c"))
    assert "was trained on standardized features and this run's are not standardized" in raw
    assert raw.endswith("standardize them (--standardize)"), raw
    (other,) = warnings("--data", str(tmp_path / "other.npz"), "--standardize", "--out",
                        str(tmp_path / "d"))  # fmt: skip
    assert "output units stand for the classes 3, 4, 5 and this run's for 0, 1, 2" in other


def test_user_csv_with_and_without_header(capsys, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    target = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    np.savetxt(tmp_path / "h.csv", np.c_[X, target], delimiter=",", header="a,b,c,t", comments="")
    np.savetxt(tmp_path / "n.csv", np.c_[X, target], delimiter=",")
    for name in ("h.csv", "n.csv"):
        reg = run_json(capsys, tmp_path, "--data", str(tmp_path / name), "--hidden", "",
                       "--optimizer", "gd", "--lr", "0.1", "--epochs", "300",
                       out=f"run-{name}")  # fmt: skip
        assert reg["config"]["hidden"] == [] and reg["metrics"]["validation"]["loss"] < 1e-3
        assert reg["data"]["rows"] + reg["data"]["validation_rows"] == 120  # no row lost
        assert reg["loss"]["name"] == "mse" and "not one integer label" in reg["loss"]["chosen"]
    np.savez(tmp_path / "d.npz", X=X, y=(target > 0).astype(int))
    cls = run_json(capsys, tmp_path, "--data", str(tmp_path / "d.npz"), "--epochs", "100")
    assert cls["metrics"]["validation"]["accuracy"] >= 0.9


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_breast_cancer_logistic_regression(capsys, tmp_path, device):
    """0/1 labels become float targets of the training dtype (strict refuses mixing)."""
    result = run_json(capsys, tmp_path, "--device", device, "--dataset", "breast-cancer",
                      "--model", "logistic", "--standardize", "--optimizer", "gd", "--lr", "0.5",
                      "--epochs", "300")  # fmt: skip
    assert result["metrics"]["validation"]["accuracy"] >= 0.95


def test_help_states_the_defaults_the_library_uses(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    defaults = RunConfig()
    for flag, value in [
        ("--epochs", defaults.epochs),
        ("--val-split", defaults.val_split),
        ("--seed", defaults.seed),
        ("--weight-decay", 0),
        ("--optimizer", defaults.optimizer),
        ("--hidden", defaults.hidden[0]),
        ("--activation", defaults.activation),
        ("--dataset", defaults.dataset),
        ("--checkpoint-every", train.CHECKPOINT_EVERY),
    ]:
        help_of_flag = text.split(flag, 1)[1].split(" --", 1)[0]
        assert re.search(rf"default: {value}\b", help_of_flag), (flag, help_of_flag)
    for name, lr in train.DEFAULT_LR.items():
        assert f"{name} {lr:g}" in text


def test_resume_accepts_the_inferred_loss_and_names_what_the_run_used(capsys, tmp_path):
    r = str(tmp_path / "r")
    assert run(capsys, "--device", "cpu", "--epochs", "2", "--out", r, "--quiet")[0] == 0
    rc, _, err = run(capsys, "--resume", r, "--device", "cpu", "--epochs", "3", "--loss",
                     "cross_entropy", "--quiet")  # fmt: skip
    assert rc == 0, err
    rc, _, err = run(capsys, "--resume", r, "--device", "cpu", "--epochs", "4", "--loss", "mse")
    assert rc == 2 and "made with cross_entropy, not mse" in err
