"""Replicas (model/replicas.py): the stacked math against finite differences, and replica r
of a batched fit against a separate single fit with its own seed, lr and weight decay."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, assert_on, tolerance

from backends import ConfigError, get_backend, host_rng
from model import MLP, DivergenceError, fit, gradcheck, make_optimizer
from model.replicas import (
    init_replicas,
    per_replica,
    replica,
    replica_count,
    stack_params,
)

SEEDS, LRS, DECAYS = [3, 1, 4], [0.05, 0.2, 0.1], [0.0, 0.01, 0.003]


def _problem(backend, n=37, seed=5):
    rng = np.random.default_rng(seed)
    X = backend.asarray(rng.normal(size=(n, 4)))
    y = backend.asarray((rng.normal(size=n) > 0) + (rng.normal(size=n) > 1), dtype=backend.xp.int64)
    return X, y


@pytest.mark.parametrize("device_spec", ["cpu", "strict"], indirect=True)
@pytest.mark.parametrize("shared", [True, False], ids=["shared-rows", "own-rows"])
@pytest.mark.parametrize(
    "loss,output", [("mse", "sigmoid"), ("sse", "identity"), ("bce", None), ("cross_entropy", None)]
)
def test_stacked_gradients_pass_gradcheck(backend, loss, output, shared):
    """Sum over replicas of C_r: its gradient with respect to replica r's parameters is
    replica r's own, so backward of stacked parameters must match finite differences of
    sum_r C_r, with rows shared by the replicas (X (N, d)) or their own (X (R, N, d))."""
    rng = np.random.default_rng(len(loss) + shared)
    k = 1 if loss == "bce" else 3
    model = MLP((3, 4, k), activation="tanh", output=output, loss=loss)
    lead = () if shared else (2,)
    X = backend.asarray(rng.normal(size=(*lead, 5, 3)))
    if loss == "cross_entropy":
        Y = backend.asarray(np.eye(k)[rng.integers(0, k, (*lead, 5))])
    elif loss == "bce":
        Y = backend.asarray(rng.integers(0, 2, (*lead, 5, 1)))
    else:
        Y = backend.asarray(rng.normal(size=(*lead, 5, k)))
    params = {
        name: backend.asarray(rng.normal(0, 0.8, (2, *s)))
        for name, s in model.param_shapes().items()
    }
    _, cache = model.forward(params, X)
    grads = model.backward(params, cache, Y)
    xp = backend.xp
    errors = gradcheck(lambda p: xp.sum(model.loss_value(p, X, Y)), params, grads)
    assert max(errors.values()) < 1e-6, errors


def test_stacked_gradcheck_catches_a_wrong_gradient():
    b = get_backend("cpu", "float64")
    model = MLP((3, 4, 2), activation="tanh", loss="mse")
    rng = np.random.default_rng(0)
    X, Y = b.asarray(rng.normal(size=(5, 3))), b.asarray(rng.normal(size=(5, 2)))
    params = init_replicas(model, b, [host_rng(0), host_rng(1)])
    _, cache = model.forward(params, X)
    grads = model.backward(params, cache, Y)
    grads["W1"][1, ...] *= 1.01  # replica 1's gradient only
    errors = gradcheck(lambda p: b.xp.sum(model.loss_value(p, X, Y)), params, grads)
    assert errors["W1"] > 1e-3 and errors["W2"] < 1e-6


def _separate(model, backend, name, seed, lr, decay, X, y, validation, epochs):
    """The single run replica (seed, lr, decay) stands for: init then shuffles from one
    generator, as Run draws them."""
    rng = host_rng(seed)
    params = model.init_params(backend, rng)
    result = fit(model, params, X, y, optimizer=make_optimizer(name, lr, weight_decay=decay),
                 epochs=epochs, batch_size=8, rng=rng, validation=validation)  # fmt: skip
    return params, result.history


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_replica_r_equals_a_separate_run_with_its_seed_lr_and_decay(backend, name):
    """37 rows in shuffled batches of 8 (a short last batch), 4 epochs, float64: every
    replica's parameters and history (training and validation) match its own fit."""
    X, y = _problem(backend)
    validation = _problem(backend, n=11, seed=6)
    model = MLP((4, 6, 3), activation="tanh", loss="cross_entropy")
    rngs = [host_rng(s) for s in SEEDS]
    params = init_replicas(model, backend, rngs)
    opt = per_replica(make_optimizer(name, 1.0), lr=LRS, weight_decay=DECAYS, like=params["W1"])
    result = fit(model, params, X, y, optimizer=opt, epochs=4, batch_size=8, rng=rngs,
                 validation=validation, divergence="freeze")  # fmt: skip
    assert result.diverged == [None] * 3
    for r, (seed, lr, decay) in enumerate(zip(SEEDS, LRS, DECAYS, strict=True)):
        single, history = _separate(model, backend, name, seed, lr, decay, X, y, validation, 4)
        for k, p in replica(params, r).items():
            assert_on(backend, p)
            assert_close(backend.to_numpy(p), backend.to_numpy(single[k]), tolerance(backend))
        assert result.history[r].keys() == history.keys()
        for k in history:
            assert_close(result.history[r][k], history[k], tolerance(backend))


@pytest.mark.parametrize("name,huge", [("sgd", 1e10), ("momentum", 1e10), ("adam", 1e200)])
def test_a_diverging_replica_is_frozen_and_changes_no_other(numpy_backend, name, huge):
    """A huge lr on a regression: that replica diverges in the epoch a separate run raises
    DivergenceError in (4 for sgd and momentum, 1 for adam), keeps the parameters of the
    epoch before, and the other two still equal their separate runs."""
    b = numpy_backend
    rng = np.random.default_rng(2)
    X, y = b.asarray(rng.normal(size=(37, 4))), b.asarray(rng.normal(size=(37, 1)))
    model = MLP((4, 6, 1), activation="tanh", loss="mse")
    lrs = [0.01, huge, 0.03]
    rngs = [host_rng(s) for s in SEEDS]
    params = init_replicas(model, b, rngs)
    opt = per_replica(make_optimizer(name, 1.0), lr=lrs, like=params["W1"])
    with np.errstate(all="ignore"):
        result = fit(model, params, X, y, optimizer=opt, epochs=6, batch_size=8, rng=rngs,
                     divergence="freeze")  # fmt: skip
        with pytest.raises(DivergenceError) as info:
            _separate(model, b, name, SEEDS[1], lrs[1], 0.0, X, y, None, 6)
    epoch = info.value.epoch
    assert result.diverged == [None, epoch, None]
    expected = {1: epoch - 1, 0: 6, 2: 6}  # replica -> epochs its separate run trains
    for r, epochs in expected.items():
        single, history = _separate(model, b, name, SEEDS[r], lrs[r], 0.0, X, y, None, epochs)
        for k, p in replica(params, r).items():
            np.testing.assert_allclose(p, single[k], rtol=1e-12)
        losses = result.history[r].get("loss", [])
        assert len(losses) == epochs
        np.testing.assert_allclose(losses, history["loss"], rtol=1e-12)


def test_every_replica_diverging_stops_the_fit():
    b = get_backend("cpu", "float64")
    rng = np.random.default_rng(2)
    X, y = b.asarray(rng.normal(size=(20, 4))), b.asarray(rng.normal(size=(20, 1)))
    model = MLP((4, 6, 1), activation="relu", loss="mse")
    params = init_replicas(model, b, [host_rng(0), host_rng(1)])
    epochs = []
    with np.errstate(all="ignore"):
        result = fit(model, params, X, y, optimizer=make_optimizer("sgd", 1e4), epochs=50,
                     callback=lambda e, *_: epochs.append(e), divergence="freeze")  # fmt: skip
    assert all(d is not None for d in result.diverged)
    assert len(epochs) == max(result.diverged) < 50
    assert all(np.all(np.isfinite(p)) for p in params.values())  # last finite epochs kept


def test_float32_replicas_stay_float32_and_full_batch_shares_the_rows(backend):
    """Full batch: no gather, X (N, d) broadcast against (R, ...) parameters; a replica
    equals its own full-batch fit (float32 tolerance)."""
    b = backend.with_dtype("float32")
    X, y = _problem(b)
    model = MLP((4, 5, 3), activation="relu", loss="cross_entropy")
    params = init_replicas(model, b, [host_rng(0), host_rng(1)])
    opt = per_replica(make_optimizer("gd", 0.5), lr=[0.5, 0.1], like=params["W1"])
    result = fit(model, params, X, y, optimizer=opt, epochs=3)
    params = result.params  # not the dict passed in: immutable arrays are not updated
    for p in [*params.values(), *result.state.get("velocity", {}).values()]:
        assert_on(b, p)
    single = model.init_params(b, host_rng(1))
    single = fit(model, single, X, y, optimizer=make_optimizer("gd", 0.1), epochs=3).params
    for k, p in replica(params, 1).items():
        assert_close(b.to_numpy(p), b.to_numpy(single[k]), 1e-5, atol=1e-6)


def test_bad_replica_input_is_refused_with_the_fix():
    b = get_backend("cpu", "float64")
    X, y = _problem(b)
    model = MLP((4, 5, 3), activation="relu", loss="cross_entropy")
    single = model.init_params(b, host_rng(0))
    with pytest.raises(ConfigError, match="leading replica axis"):
        replica_count(model, single)
    params = stack_params([single, single])
    assert replica_count(model, params) == 2
    opt = make_optimizer("sgd", 0.1)
    with pytest.raises(ConfigError, match="3 random generators given for 2 replicas"):
        fit(model, params, X, y, optimizer=opt, epochs=1, batch_size=8, rng=[host_rng(0)] * 3)
    with pytest.raises(ConfigError, match=r"move it with backend\.asarray"):
        fit(model, params, b.to_numpy(X).view(np.memmap), b.to_numpy(y), optimizer=opt, epochs=1)
    like = params["W1"]
    got = per_replica(opt, lr=np.array([0.1, 0.2]), weight_decay=np.float64(0.01), like=like)
    assert got.weight_decay == 0.01 and b.to_numpy(got.lr).tolist() == [0.1, 0.2]
    with pytest.raises(ConfigError, match=r"^lr must be a number > 0, got -0.2"):
        per_replica(opt, lr=[0.1, -0.2], like=like)
    with pytest.raises(ConfigError, match=r"^weight_decay must be a number \(finite\), got nan"):
        per_replica(opt, weight_decay=[0.0, float("nan")], like=like)
    with pytest.raises(ConfigError, match=r"one number per replica, got shape \(2, 1\)"):
        per_replica(opt, lr=np.ones((2, 1)), like=like)
