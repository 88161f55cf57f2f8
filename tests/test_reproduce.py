"""scripts/reproduce.py end to end: the seeds' systems, JSON output, the explanation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reproduce
import seed_004
from helpers import assert_close


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
    assert reproduce.main(["two-layer"]) == 0
    ours = capsys.readouterr().out
    tail = ours[ours.index("The final prediction") :]
    assert tail.split() == seed_text.split()
    out = _run_json(capsys, "two-layer", "--device", "strict:device1")
    assert_close(np.array(out["params"]["W1"]), reference.wij, 1e-10)
    assert_close(np.array(out["params"]["W2"]), reference.wjk, 1e-10)


def test_single_neuron_default_learns_and_w0_3_barely_does(capsys):
    default = _run_json(capsys, "single-neuron")
    assert default["loss_last"] < 1e-3 < default["loss_first"]
    stuck = _run_json(capsys, "single-neuron", "--w0", "3")
    assert stuck["loss_last"] > 0.99 * stuck["loss_first"]
    assert reproduce.main(["single-neuron", "--w0", "3", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "saturated" in text and "z          = w . x + b" in text


def test_explain_traces_the_first_step_with_the_right_sign(capsys):
    assert reproduce.main(["single-neuron", "--explain", "--epochs", "1"]) == 0
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

    out = _run_json(capsys, "logistic-regression")
    _, y = load_breast_cancer(return_X_y=True)
    accuracy = np.mean((np.array(out["predictions"])[:, 0] > 0.5) == y)
    assert accuracy > 0.98 and out["loss_last"] < 0.1


def test_relu_neuron_fits_its_documented_data(capsys):
    out = _run_json(capsys, "relu-neuron", "--epochs", "2000")
    assert_close(np.array(out["params"]["w"]), [0.5, -0.3, 0.2], rtol=0.1)
    assert out["loss_last"] < 0.012  # noise variance 0.01
