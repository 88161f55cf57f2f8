"""The public functions never return a wrong number silently: raw labels are prepared
wherever they enter, and a model that cannot work is refused when it is made."""

from __future__ import annotations

import numpy as np
import pytest

from backends import get_backend, host_rng
from model import MLP, make_optimizer
from model.fit import run_epoch


def test_run_epoch_with_raw_labels_reports_the_true_loss(backend):
    """Cross-entropy of the logits before the (full-batch) step, written out in NumPy."""
    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(10, 4)), rng.permutation(10)
    model = MLP((4, 10), loss="cross_entropy")
    params = model.init_params(backend, host_rng(1))
    W, b = (backend.to_numpy(params[k]) for k in ("W1", "b1"))
    logits = X @ W + b
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected = np.mean(lse - logits[np.arange(10), labels])
    sgd = make_optimizer("sgd", 0.1)
    y = backend.asarray(labels, dtype=backend.xp.int64)
    _, _, loss = run_epoch(model, params, sgd.init(params), backend.asarray(X), y, sgd)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_bce_with_several_outputs_is_multi_label():
    """One sigmoid per output, bce per column: C = mean_i sum_j -[y log p + (1-y) log(1-p)]
    (scikit-learn's multi-label log loss), written out in NumPy."""
    backend = get_backend("cpu", "float64")
    model = MLP((4, 3), loss="bce")
    assert model.multi_label and model.layers[-1].activation == "sigmoid"
    params = model.init_params(backend, host_rng(0))
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(8, 4)), rng.integers(0, 2, (8, 3))
    p = 1 / (1 + np.exp(-(X @ backend.to_numpy(params["W1"]) + backend.to_numpy(params["b1"]))))
    expected = np.mean(np.sum(-(Y * np.log(p) + (1 - Y) * np.log(1 - p)), axis=1))
    loss = model.loss_value(params, backend.asarray(X), backend.asarray(Y, dtype=backend.xp.int64))
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    predicted = model.predict_class(params, backend.asarray(X))
    np.testing.assert_array_equal(backend.to_numpy(predicted), (p > 0.5).astype(np.int64))


def test_cross_entropy_evaluate_with_one_hot_and_raw_labels_agree():
    backend = get_backend("cpu", "float64")
    model = MLP((3, 4), loss="cross_entropy")
    params = model.init_params(backend, host_rng(2))
    X = backend.asarray(np.random.default_rng(3).normal(size=(6, 3)))
    labels = np.array([0, 1, 2, 3, 0, 1])
    raw = model.loss_value(params, X, backend.asarray(labels, dtype=backend.xp.int64))
    one_hot = model.loss_value(params, X, backend.asarray(np.eye(4)[labels]))
    assert float(raw) == pytest.approx(float(one_hot), rel=1e-14)
