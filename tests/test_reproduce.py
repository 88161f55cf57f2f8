"""scripts/reproduce.py end to end: the seeds' systems, JSON output, the explanation,
and one error line for every input that cannot work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import _cli
import numpy as np
import pytest
import reproduce
import seed_004
from helpers import assert_close

ROOT = Path(__file__).resolve().parents[1]


def _run_json(capsys, *argv):
    assert reproduce.main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object: anything else fails to parse


@pytest.mark.parametrize("system", reproduce.SYSTEMS)
def test_json_has_the_documented_keys(capsys, system):
    out = _run_json(capsys, system, "--epochs", "3", "--device", "strict")
    assert set(out) == {
        "system",
        "device",
        "dtype",
        "params",
        "loss_first",
        "loss_last",
        "predictions",
    }
    assert out["system"] == system and out["device"] == "strict" and out["dtype"] == "float64"
    expected = {"w", "b"} if system != "two-layer" else {"W1", "W2"}
    assert set(out["params"]) == expected


def test_two_layer_prints_what_the_seed_prints(capsys):
    reference = seed_004.NeuralNetwork()
    reference.gradient_descent(seed_004.X, seed_004.y, 10000)
    seed_text = capsys.readouterr().out
    assert reproduce.main(["two-layer", "--device", "cpu"]) == 0
    ours = capsys.readouterr().out
    tail = ours[ours.index("The final prediction") :]
    assert tail.split() == seed_text.split()


def test_two_layer_json_holds_the_seeds_weights_and_printed_prediction(capsys):
    reference = seed_004.NeuralNetwork()
    reference.gradient_descent(seed_004.X, seed_004.y, 100)
    printed = capsys.readouterr().out.replace("[", " ").replace("]", " ").split()[7:]
    out = _run_json(capsys, "two-layer", "--epochs", "100", "--device", "cpu")
    assert_close(np.array(out["params"]["W1"]), reference.wij, 1e-12)
    assert_close(np.array(out["params"]["W2"]), reference.wjk, 1e-12)
    assert_close(np.ravel(out["predictions"]), np.array(printed, dtype=float), 1e-7)


def test_single_neuron_default_learns_and_w0_3_barely_does(capsys):
    default = _run_json(capsys, "single-neuron", "--device", "cpu")
    assert default["loss_last"] < 1e-3 < default["loss_first"]
    stuck = _run_json(capsys, "single-neuron", "--w0", "3", "--device", "cpu")
    assert stuck["loss_last"] > 0.99 * stuck["loss_first"]
    assert reproduce.main(["single-neuron", "--w0", "3", "--explain", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "saturated" in text and "z          = w . x + b" in text


def test_explain_traces_the_first_step_with_the_right_sign(capsys):
    assert reproduce.main(["single-neuron", "--explain", "--epochs", "1", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    values = {}
    trace = text.split("\n\n")[0]
    for line in trace.splitlines()[1:]:
        if not line.strip().startswith("note"):
            symbol, *_, value = (part.strip() for part in line.split("="))
            values[symbol] = float(value)
    z = 0.5 * 3 + 2
    y_hat = 1 / (1 + np.exp(-z))
    expected = {
        "z": z,
        "y_hat": y_hat,
        "C": 0.5 * y_hat**2,
        "C'(y_hat)": y_hat,
        "dC/dw": y_hat * y_hat * (1 - y_hat) * 3,
        "dC/db": y_hat * y_hat * (1 - y_hat),
    }
    for symbol, value in expected.items():
        assert values[symbol] == pytest.approx(value, rel=1e-5)
    assert values["w'"] == pytest.approx(0.5 - 0.05 * expected["dC/dw"], rel=1e-5)
    assert "the tutorial writes C'(y_hat) = y - y_hat" in text


def test_logistic_regression_reaches_high_training_accuracy(capsys):
    from sklearn.datasets import load_breast_cancer

    out = _run_json(capsys, "logistic-regression", "--device", "cpu")
    _, y = load_breast_cancer(return_X_y=True)
    accuracy = np.mean((np.array(out["predictions"])[:, 0] > 0.5) == y)
    assert accuracy > 0.98 and out["loss_last"] < 0.1


def test_relu_neuron_fits_its_documented_data(capsys):
    out = _run_json(capsys, "relu-neuron", "--epochs", "2000", "--device", "cpu")
    assert_close(np.array(out["params"]["w"]), [0.5, -0.3, 0.2], rtol=0.1)
    assert out["loss_last"] < 0.012  # noise variance 0.01


def test_single_neuron_values_and_whole_number_epochs(capsys):
    """--x 1 --y 1 --w0 -1 --b0 0.5 --epochs 1e1: ten steps of w -= eta x dC/dz,
    b -= eta dC/dz with dC/dz = (y_hat - y) y_hat (1 - y_hat), computed here by hand."""
    x, y, w, b, lr = 1.0, 1.0, -1.0, 0.5, 0.05
    for _ in range(10):
        y_hat = 1 / (1 + np.exp(-(w * x + b)))
        dz = (y_hat - y) * y_hat * (1 - y_hat)
        w, b = w - lr * dz * x, b - lr * dz
    argv = ["--x", "1", "--y", "1", "--w0", "-1", "--b0", "0.5", "--epochs", "1e1"]
    out = _run_json(capsys, "single-neuron", *argv, "--device", "cpu")
    assert_close([out["params"]["w"][0], out["params"]["b"]], [w, b], 1e-12)


BAD_INPUTS = [  # argv, a phrase of the one error line
    (["single-neuron", "--y", "5"], "outside [0, 1]: the sigmoid neuron's output"),
    (["single-neuron", "--y", "-0.5"], "use a target in [0, 1] (--y)"),
    (["single-neuron", "--y", "nan"], "the target y = nan is outside [0, 1]"),
    (["two-layer", "--w0", "3"], "drop --w0 or reproduce single-neuron"),
    (["relu-neuron", "--y", "1"], "drop --y"),
    (["logistic-regression", "--x", "1"], "drop --x"),
    (["two-layer", "--b0", "0"], "drop --b0"),
    (["single-neuron", "--explain", "--json"], "drop one of them"),
    (["two-layer", "--epochs", "1e13"], "between 1 and 10,000,000, got 10,000,000,000,000"),
    (["two-layer", "--epochs", "10000001"], "minutes to hours"),
    (["relu-neuron", "--epochs", "0"], "got 0: a step takes"),
    (["relu-neuron", "--epochs", "2.5"], "'2.5' is not a whole number (see"),
    (["relu-neuron", "--epochs", "many"], "'many' is not a number (see"),
    (["two-layer", "--lr", "0"], "positive finite number, got 0 (--lr 1)"),
    (["logistic-regression", "--lr", "-0.5"], "got -0.5 (--lr 0.5)"),
    (["relu-neuron", "--lr", "nan"], "got nan (--lr 0.1)"),
    (["single-neuron", "--lr", "inf"], "got inf (--lr 0.05)"),
    (["single-neuron", "--x", "inf"], "x must be a finite number, got inf (--x 3)"),
    (["single-neuron", "--w0", "nan"], "w0 must be a finite number, got nan (--w0 0.5)"),
    (["single-neuron", "--b0=-inf"], "b0 must be a finite number, got -inf (--b0 2)"),
    (["single-neuron", "--w0", "1e308", "--x", "1e10"], "overflows"),
]


@pytest.mark.parametrize("argv,phrase", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_status_2(capsys, argv, phrase):
    try:
        status = _cli.run(reproduce.main, argv)
    except SystemExit as exc:  # argparse's own errors exit from inside the parser
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and phrase in err


def test_bad_input_from_the_real_entry_point():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "two-layer", "--w0", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: --w0 sets a single-neuron value")
