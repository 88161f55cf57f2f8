"""Activations and losses: stability, values against independent formulas, and
hand-written derivatives against float64 finite differences, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, assert_on, random_targets
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backends import get_backend
from model import gradcheck
from model.activations import ACTIVATIONS
from model.losses import LOSSES, bce, cross_entropy, mse, sse

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_finite_and_warning_free_at_extremes(backend, name, dtype):
    b = backend.with_dtype(dtype)
    fwd, bwd = ACTIVATIONS[name]
    z = b.asarray(np.array([[-1e4, -30.0, 0.0, 30.0, 1e4]]))
    a = fwd(z, xp=b.xp)  # RuntimeWarnings are errors in this suite (pyproject)
    dz = bwd(b.xp.ones_like(a), a, xp=b.xp)
    assert_on(b, a)
    assert_on(b, dz)
    assert np.all(np.isfinite(b.to_numpy(a))) and np.all(np.isfinite(b.to_numpy(dz)))


def test_activation_values_match_textbook_formulas(backend):
    z_host = RNG.normal(0, 3, size=(4, 5))
    z = backend.asarray(z_host)
    expected = {
        "identity": z_host,
        "sigmoid": 1 / (1 + np.exp(-z_host)),
        "tanh": np.tanh(z_host),
        "relu": np.where(z_host > 0, z_host, 0.0),
        "softmax": np.exp(z_host) / np.exp(z_host).sum(axis=1, keepdims=True),
    }
    for name, (fwd, _) in ACTIVATIONS.items():
        assert_close(backend.to_numpy(fwd(z, xp=backend.xp)), expected[name], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_saturates_to_its_limits(backend, dtype):
    from model.activations import sigmoid

    b = backend.with_dtype(dtype)
    z = np.array([-1e4, -60.0, 60.0, 1e4])
    s = b.to_numpy(sigmoid(b.asarray(z), xp=b.xp))
    assert s[-1] == s[-2] == 1.0 and 0.0 <= s[0] < 1e-37
    assert_close(s[1], np.exp(-60.0) / (1 + np.exp(-60.0)), 1e-6)  # tails keep relative precision


def test_relu_derivative_is_zero_at_zero(backend, xp):
    _, bwd = ACTIVATIONS["relu"]
    a = backend.asarray(np.array([0.0, 2.0]))
    np.testing.assert_array_equal(backend.to_numpy(bwd(xp.ones_like(a), a, xp=xp)), [0.0, 1.0])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(backend, xp, name):
    fwd, bwd = ACTIVATIONS[name]
    rng = np.random.default_rng(7)  # the same data on every backend, however many there are
    z_host = rng.normal(0, 2, size=(3, 4))
    z_host[np.abs(z_host) < 0.05] += 0.1  # keep away from relu's kink
    weights = backend.asarray(rng.normal(size=(3, 4)))  # C = sum(weights * f(z))
    z = backend.asarray(z_host)
    analytic = bwd(weights, fwd(z, xp=xp), xp=xp)
    err = gradcheck(lambda p: xp.sum(weights * fwd(p["z"], xp=xp)), {"z": z}, {"z": analytic})
    assert err["z"] < 1e-8


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gradient_matches_finite_differences(backend, xp, name):
    loss = LOSSES[name]
    rng = np.random.default_rng(8)  # the same data on every backend, however many there are
    z = backend.asarray(rng.normal(0, 2, size=(5, 3)))
    y = random_targets(backend, name, (5, 3), rng)
    grad = loss.grad(z, y, xp=xp)
    assert_on(backend, grad)
    err = gradcheck(lambda p: loss.value(p["z"], y, xp=xp), {"z": z}, {"z": grad})
    assert err["z"] < 1e-8


def test_loss_values_match_independent_definitions(backend, xp):
    from sklearn.metrics import log_loss

    y_hat_h, y_h = RNG.uniform(0.1, 0.9, size=(6, 1)), RNG.normal(size=(6, 1))
    y_hat, y = backend.asarray(y_hat_h), backend.asarray(y_h)
    assert_close(float(sse(y_hat, y, xp=xp)), 0.5 * np.sum((y_h - y_hat_h) ** 2), 1e-12)
    assert_close(float(mse(y_hat, y, xp=xp)), np.mean((y_h - y_hat_h) ** 2), 1e-12)

    z_h = RNG.normal(0, 2, size=(8, 1))
    labels_h = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    p = 1 / (1 + np.exp(-z_h[:, 0]))
    got = float(bce(backend.asarray(z_h), backend.asarray(labels_h[:, None]), xp=xp))
    assert_close(got, log_loss(labels_h, p), 1e-12)

    logits_h = RNG.normal(0, 2, size=(8, 3))
    classes_h = np.array([0, 1, 2, 2, 1, 0, 0, 2])
    probs = np.exp(logits_h) / np.exp(logits_h).sum(axis=1, keepdims=True)
    labels = backend.asarray(classes_h, dtype=xp.int64)
    got = float(cross_entropy(backend.asarray(logits_h), labels, xp=xp))
    assert_close(got, log_loss(classes_h, probs), 1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logit_losses_finite_for_huge_logits(backend, dtype):
    b = backend.with_dtype(dtype)
    xp = b.xp
    z = b.asarray(np.array([[-1e4], [1e4], [5e3]]))
    y = b.asarray(np.array([[1.0], [0.0], [1.0]]))
    value = float(bce(z, y, xp=xp))
    assert_close(value, (1e4 + 1e4 + 0.0) / 3, 1e-6)
    assert np.all(np.isfinite(b.to_numpy(LOSSES["bce"].grad(z, y, xp=xp))))
    logits = b.asarray(np.array([[1e4, -1e4, 0.0]]))
    label = b.asarray(np.array([1]), dtype=xp.int64)
    assert_close(float(cross_entropy(logits, label, xp=xp)), 2e4, 1e-6)


@settings(max_examples=60, deadline=None)
@given(
    z=arrays(np.float64, (3, 4), elements=st.floats(-1e4, 1e4, allow_nan=False)),
    labels=arrays(np.int64, (3,), elements=st.integers(0, 3)),
)
def test_softmax_and_cross_entropy_stay_finite_for_any_logits(z, labels):
    """Property: for any logits, softmax rows are probabilities and the loss and its
    gradient are finite (the loss >= 0, the gradient's rows sum to 0)."""
    b = get_backend("cpu", "float64")
    xp = b.xp
    p = b.to_numpy(ACTIVATIONS["softmax"][0](b.asarray(z), xp=xp))
    assert np.all((p >= 0) & (p <= 1))
    assert_close(p.sum(axis=1), np.ones(3), 1e-12)
    y = b.asarray(labels, dtype=xp.int64)
    loss = float(cross_entropy(b.asarray(z), y, xp=xp))
    grad = b.to_numpy(LOSSES["cross_entropy"].grad(b.asarray(z), y, xp=xp))
    assert np.isfinite(loss) and loss >= 0
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)
