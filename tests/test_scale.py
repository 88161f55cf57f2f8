"""Features too large for the arithmetic (issue 24: iris times 1e30, in float32's range but
not standardized): before training a warning names --standardize; a divergence on such
data names --standardize rather than a smaller learning rate; a completed run whose loss
stalled says so, naming --standardize for raw features and --lr otherwise."""

from __future__ import annotations

import _cli
import numpy as np
import pytest
import train

from model.config import LARGE_FEATURES
from model.data import load_dataset

STANDARDIZE = "standardize them (--standardize)"


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """Iris times 1e30, float32 (the largest value 7.9e30)."""
    X, y = load_dataset("iris")
    path = tmp_path_factory.mktemp("data") / "iris-1e30.npz"
    np.savez(path, X=(X * 1e30).astype(np.float32), y=y)
    return str(path)


def run(capsys, tmp_path, *argv):
    argv = [*argv, "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"), "--overwrite"]
    rc = _cli.run(train.main, argv, train.FLAGS)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def _warnings(lines):
    return [line for line in lines if line.startswith("warning: ")]


def test_huge_raw_features_are_warned_about_before_training_and_the_stall_after(
    capsys, tmp_path, huge
):
    """Adam "completes" at one constant loss: both warnings name --standardize."""
    rc, out, err = run(capsys, tmp_path, "--data", huge, "--optimizer", "adam", "--epochs", "20")
    assert rc == 0 and "validation accuracy" in out
    before, after = _warnings(err)
    assert before.startswith("warning: the features are not standardized and reach 7.9e+30 ")
    assert before.endswith(STANDARDIZE), before
    assert "the loss stalls or diverges whatever the learning rate" in before
    assert after.startswith("warning: the training loss stayed at ")
    assert "over the last 5 epochs: the network does not learn; the features are not " in after
    assert after.endswith(f"(values up to 7.9e+30): {STANDARDIZE}"), after


def test_a_divergence_on_huge_raw_features_names_standardize_not_the_learning_rate(
    capsys, tmp_path, huge
):
    rc, out, err = run(capsys, tmp_path, "--data", huge, "--optimizer", "sgd", "--epochs", "20")
    assert rc == 2 and out == ""
    assert _warnings(err)[0].endswith(STANDARDIZE)
    (line,) = [line for line in err if line.startswith("error: ")]
    assert line.startswith("error: training diverged: loss is nan at epoch ")
    assert "the features are not standardized and reach 7.9e+30" in line
    assert "smaller learning rate" not in line and "--lr" not in line
    assert line.endswith("(--standardize)"), line


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_same_data_standardized_trains_without_a_warning(capsys, tmp_path, huge, optimizer):
    rc, out, err = run(capsys, tmp_path, "--data", huge, "--standardize", "--optimizer",
                       optimizer, "--epochs", "50")  # fmt: skip
    assert rc == 0 and _warnings(err) == [], err
    assert float(out.split("validation accuracy ")[1].split()[0]) >= 0.8


def test_large_raw_features_below_the_threshold_are_not_warned_about(capsys, tmp_path):
    """Raw values up to 1e5 (counts, prices in cents) may train: no warning before, and
    none after when the loss moves."""
    X, y = load_dataset("iris")
    scaled = LARGE_FEATURES / np.abs(X).max() / 10
    np.savez(tmp_path / "d.npz", X=X * scaled, y=y)
    rc, _, err = run(capsys, tmp_path, "--data", str(tmp_path / "d.npz"), "--epochs", "20")
    assert rc == 0 and _warnings(err) == [], err


def test_a_stalled_loss_on_standardized_features_names_the_learning_rate(capsys, tmp_path):
    """A learning rate too small to change any float32 weight: the loss repeats exactly."""
    rc, _, err = run(capsys, tmp_path, "--dataset", "iris", "--standardize", "--lr", "1e-30",
                     "--epochs", "8")  # fmt: skip
    assert rc == 0
    (line,) = _warnings(err)
    assert line.startswith("warning: the training loss stayed at ")
    assert line.endswith("the network does not learn; try another learning rate (--lr)"), line


def _not_learning_warnings(losses, largest=100.0, standardizer=None) -> list:
    """The records :func:`model.run._warn_if_not_learning` logs for ``losses``."""
    import logging

    from model.run import _warn_if_not_learning

    class Data:
        pass

    Data.standardizer, Data.largest = standardizer, largest
    records: list = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("handgrad")
    logger.addHandler(handler)
    try:
        _warn_if_not_learning(losses, Data)
    finally:
        logger.removeHandler(handler)
    return records


@pytest.mark.parametrize(
    "losses",
    [
        [1.0] * 4,  # too few epochs to tell
        [2.0] + [1.0] * 4,  # moved, then too few equal epochs
        [0.0] * 5,  # a perfect fit
        [1.1, 0.5] + [0.032] * 5,  # converged (L-BFGS on raw iris): it did learn
        [2.3, 1.0] + [9.9e-10] * 5,
        [2.3, 2.9, 4.5],  # rose, but not to twice the first epoch's
        [2.3, float("nan")],  # a divergence is an error of its own
    ],
)
def test_a_loss_that_moved_converged_or_reached_zero_is_not_warned_about(losses):
    assert _not_learning_warnings(losses) == []


def test_a_stalled_loss_names_standardize_only_for_raw_features_beyond_the_unit_scale():
    stalled = [2.0] + [1.5] * 5
    (record,) = _not_learning_warnings(stalled, largest=100.0)
    assert record.setting == "standardize" and "values up to 100" in record.getMessage()
    for largest, standardizer in ((1.0, None), (100.0, object())):
        (record,) = _not_learning_warnings(stalled, largest, standardizer)
        assert record.setting == "lr" and "standardize" not in record.getMessage()


def test_a_loss_that_rose_far_above_its_first_epoch_names_a_smaller_learning_rate():
    (record,) = _not_learning_warnings([2.3, 60.0, 78.5, 78.9], largest=1.0)
    message = record.getMessage()
    assert record.setting == "lr"
    assert "rose from 2.3 (epoch 1) to 78.9 (epoch 4)" in message
    assert message.endswith("try a smaller learning rate"), message


def test_a_huge_learning_rate_on_digits_is_warned_about(capsys, tmp_path):
    """The loss bounces far above its start without overflowing: no divergence error,
    but a warning naming --lr (digits' features are in [0, 1]: not --standardize)."""
    rc, _, err = run(capsys, tmp_path, "--lr", "1e6", "--epochs", "30")
    assert rc == 0
    (line,) = _warnings(err)
    assert "the training loss rose from " in line and "standardize" not in line
    assert line.endswith("try a smaller learning rate (--lr)"), line


def test_a_converged_lbfgs_run_is_not_warned_about(capsys, tmp_path):
    rc, _, err = run(capsys, tmp_path, "--dataset", "iris", "--optimizer", "lbfgs",
                       "--epochs", "300")  # fmt: skip
    assert rc == 0 and _warnings(err) == [], err
