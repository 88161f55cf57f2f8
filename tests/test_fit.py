"""The fit loop: history, validation, divergence, resumption, and no host round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, assert_on

from backends import get_backend, host_rng
from model import MLP, DivergenceError, fit, make_optimizer
from model.fit import run_epoch


def _problem(backend, n=50, seed=0):
    rng = np.random.default_rng(seed)
    X_h = rng.normal(size=(n, 4))
    y_h = (X_h[:, 0] + X_h[:, 1] > 0).astype(int) + (X_h[:, 2] > 1)
    return backend.asarray(X_h), backend.asarray(y_h, dtype=backend.xp.int64)


def test_history_records_loss_and_validation_each_epoch(backend):
    """... and every array stays on the data's device (strict's device1 included)."""
    X, y = _problem(backend)
    model = MLP((4, 8, 3), activation="tanh", loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    res = fit(
        model,
        params,
        X,
        y,
        optimizer=make_optimizer("momentum", 0.2),
        epochs=30,
        batch_size=10,
        validation=(X, y),
    )
    for p in (*res.params.values(), *res.state["velocity"].values()):
        assert_on(backend, p)
    h = res.history
    assert len(h["loss"]) == len(h["val_loss"]) == len(h["val_accuracy"]) == 30
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_accuracy"][-1] > 0.9


def test_full_batch_epoch_loss_is_the_loss_before_the_step(backend):
    X, y = _problem(backend)
    model = MLP((4, 5, 3), activation="sigmoid", loss="cross_entropy")
    params = model.init_params(backend, host_rng(3))
    before = float(model.loss_value(params, X, y))
    res = fit(model, params, X, y, optimizer=make_optimizer("gd", 0.1), epochs=1)
    assert_close(res.history["loss"][0], before, 1e-12)


def test_minibatch_epoch_loss_weights_the_short_last_batch(backend):
    """Epoch loss = sum_b C_b n_b / N with C_b at the parameters before batch b's step."""
    X, y = _problem(backend, n=23)
    model = MLP((4, 5, 3), activation="relu", loss="cross_entropy")
    opt = make_optimizer("sgd", 0.1)
    params = model.init_params(backend, host_rng(3))
    res = fit(model, params, X, y, optimizer=opt, epochs=1, batch_size=10, rng=host_rng(9))
    # replay by hand on the host-numpy backend with the same permutation
    cpu = get_backend("cpu", "float64")
    Xh, yh = cpu.asarray(backend.to_numpy(X)), cpu.asarray(backend.to_numpy(y), dtype=np.int64)
    order = host_rng(9).permutation(23)
    p = model.init_params(cpu, host_rng(3))
    state, expected = opt.init(p), 0.0
    for s in range(0, 23, 10):
        idx = order[s : s + 10]
        expected += float(model.loss_value(p, Xh[idx], yh[idx])) * len(idx) / 23
        _, cache = model.forward(p, Xh[idx])
        p, state = opt.update(p, model.backward(p, cache, yh[idx]), state)
    assert_close(res.history["loss"][0], expected, 1e-12)


def test_divergence_names_the_epoch_and_a_smaller_learning_rate(backend):
    rng = np.random.default_rng(0)
    X = backend.asarray(rng.normal(size=(20, 3)) * 10)
    Y = backend.asarray(rng.normal(size=(20, 1)) * 10)
    model = MLP((3, 8, 1), activation="relu", loss="mse")
    params = model.init_params(backend, host_rng(0))
    diverged = pytest.raises(DivergenceError, match=r"at epoch \d+.*e\.g\. 10\)")
    with np.errstate(all="ignore"), diverged:
        fit(model, params, X, Y, optimizer=make_optimizer("sgd", 100.0), epochs=200)


def test_split_fit_equals_one_fit_bitwise():
    """Resuming with the saved optimizer state and RNG continues exactly (same backend)."""
    b = get_backend("cpu", "float64")
    X, y = _problem(b)
    model = MLP((4, 8, 3), activation="tanh", loss="cross_entropy")
    opt = make_optimizer("adam", 0.01)
    p1 = model.init_params(b, host_rng(0))
    fit(model, p1, X, y, optimizer=opt, epochs=6, batch_size=7, rng=host_rng(5))
    p2, rng = model.init_params(b, host_rng(0)), host_rng(5)
    half = fit(model, p2, X, y, optimizer=opt, epochs=3, batch_size=7, rng=rng)
    fit(
        model,
        half.params,
        X,
        y,
        optimizer=opt,
        epochs=6,
        batch_size=7,
        rng=rng,
        state=half.state,
        start_epoch=3,
    )
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_mismatched_rows_are_refused():
    b = get_backend("cpu", "float64")
    model = MLP((4, 3), loss="cross_entropy")
    X, y = _problem(b)
    with pytest.raises(ValueError, match="X has 50 rows but Y has 49"):
        fit(
            model,
            model.init_params(b, host_rng(0)),
            X,
            y[:49],
            optimizer=make_optimizer("gd", 1),
            epochs=1,
        )


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
def test_training_epoch_never_reads_a_value_back_to_the_host(monkeypatch, optimizer, loss):
    """A step that turns an array into a Python scalar or bool (a device sync on a GPU)
    fails here: array-api-strict arrays are made to refuse every such conversion."""
    import array_api_strict

    b = get_backend("strict", "float64")
    X, y = _problem(b, n=30)
    k = 3 if loss == "cross_entropy" else 1
    model = MLP((4, 6, 5, k), activation="relu", loss=loss)
    Y = model.prepare_targets(
        y if loss == "cross_entropy" else b.xp.astype(y[:, None] > 0, b.dtype), dtype=b.dtype
    )
    opt = make_optimizer(optimizer, 0.1, weight_decay=0.01)
    params = model.init_params(b, host_rng(0))
    state = opt.init(params)

    def refuse(self, *args, **kwargs):
        raise AssertionError("host round-trip in the training hot loop")

    cls = array_api_strict._array_object.Array
    for name in (
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
        "__array__",
        "__dlpack__",
        "tolist",
        "item",
    ):
        if hasattr(cls, name):
            monkeypatch.setattr(cls, name, refuse)
    with pytest.raises(AssertionError, match="host round-trip"):
        float(X[0, 0])  # the trap works
    run_epoch(model, params, state, X, Y, opt, batch_size=8)
