"""L-BFGS (model/lbfgs.py) and its strong Wolfe line search (model/linesearch.py): the
steps meet the conditions, the optimum is SciPy's L-BFGS-B's, the loss never rises, every
backend and replicas agree, and a resumed fit continues bit for bit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import assert_close

from backends import ConfigError, get_backend, host_rng
from model import MLP, fit, make_optimizer
from model.data import load_dataset
from model.lbfgs import LBFGS
from model.linesearch import C1, C2, strong_wolfe
from model.mlp import logistic_regression
from model.replicas import init_replicas, per_replica


def _search(phi, dphi, step, **kwargs):
    """Run strong_wolfe on a scalar function; (result, trials)."""
    search = strong_wolfe(phi(0.0), dphi(0.0), step, **kwargs)
    trials = []
    a = next(search)
    try:
        while True:
            trials.append(a)
            a = search.send((phi(a), dphi(a)))
    except StopIteration as stop:
        return stop.value, trials


CURVES = {
    # phi, phi', and first steps from far too short to far too long
    "quadratic": (lambda a: (a - 3.0) ** 2, lambda a: 2 * (a - 3.0)),
    "quartic": (lambda a: (a - 0.01) ** 4 - a, lambda a: 4 * (a - 0.01) ** 3 - 1),
    "exp": (lambda a: math.exp(-a) + 0.05 * a * a, lambda a: -math.exp(-a) + 0.1 * a),
    "wall": (  # inf beyond a = 2: a too long step must come back
        lambda a: (a - 1.5) ** 2 if a < 2 else math.inf,
        lambda a: 2 * (a - 1.5) if a < 2 else math.nan,
    ),
}


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("step", [1e-4, 0.1, 1.0, 10.0, 1e4])
def test_accepted_step_meets_the_strong_wolfe_conditions(curve, step):
    phi, dphi = CURVES[curve]
    result, trials = _search(phi, dphi, step)
    assert result is not None, trials
    a, value, slope = result
    assert a > 0 and value == phi(a) and slope == dphi(a)
    assert phi(a) <= phi(0.0) + C1 * a * dphi(0.0)
    assert abs(dphi(a)) <= C2 * abs(dphi(0.0))
    assert len(trials) <= 25


def test_line_search_agrees_with_scipy_on_the_accepted_step():
    """SciPy's scalar_search_wolfe2 (the same algorithm) accepts the same step when it
    starts from the same trial."""
    from scipy.optimize._linesearch import scalar_search_wolfe2

    for phi, dphi in CURVES.values():
        ours, _ = _search(phi, dphi, 1.0)
        theirs = scalar_search_wolfe2(phi, dphi, c1=C1, c2=C2)[0]
        assert ours[0] == pytest.approx(theirs, rel=1e-12)


def test_line_search_refuses_an_ascent_direction():
    with pytest.raises(ValueError, match="descent direction"):
        next(strong_wolfe(1.0, 0.5, 1.0))


def test_line_search_without_a_lower_point_fails():
    """phi rises everywhere but at 0 (rounding): no step, None."""
    result, trials = _search(lambda a: 1.0 + a, lambda a: -1.0 if a == 0 else 1.0, 1.0)
    assert result is None and 1 < len(trials) <= 25


def _rosenbrock(xp):
    def closure(params):
        x = params["x"]
        a, b = x[0], x[1]
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        g = xp.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
        return f, {"x": g}, {}

    return closure


def test_rosenbrock_reaches_its_minimum_and_never_rises(backend):
    xp = backend.xp
    opt = LBFGS()
    params = {"x": backend.asarray(np.array([-1.2, 1.0]))}
    state = opt.init(params)
    closure, values = _rosenbrock(xp), []
    for _ in range(60):
        params, state, loss, _ = opt.minimize_step(closure, params, state)
        values.append(float(loss))
    assert_close(params["x"], [1.0, 1.0], 0, 1e-10)
    assert all(b <= a for a, b in itertools.pairwise(values))
    assert values[0] < 24.2  # f(x_0) = 24.2: the first step lowered it
    from scipy.optimize import minimize

    scipy_iterations = minimize(
        lambda x: float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2),
        [-1.2, 1.0], method="L-BFGS-B", jac=None, options={"gtol": 1e-12, "ftol": 0},
    ).nit  # fmt: skip
    first_exact = next(i for i, v in enumerate(values) if v < 1e-20)
    assert first_exact < 2 * scipy_iterations  # a quasi-Newton pace, not gradient descent's


def _logistic_problem(n=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w + 0.3)))).astype(np.int64)
    return X, y


def test_regularized_logistic_regression_reaches_scipys_optimum():
    """The convex case: C = mean bce + lambda/2 ||w||^2 (the bias not decayed). SciPy's
    L-BFGS-B, unbounded, converged tightly, is the reference; handgrad's L-BFGS reaches
    its optimum to 1e-6 (parameters and objective)."""
    from scipy.optimize import minimize

    X, y = _logistic_problem()
    lam = 0.05

    def objective(theta):
        w, b = theta[:-1], theta[-1]
        z = X @ w + b
        p = 1 / (1 + np.exp(-z))
        f = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * lam * w @ w
        g = np.r_[X.T @ (p - y) / len(y) + lam * w, np.mean(p - y)]
        return f, g

    ref = minimize(objective, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 1000})  # fmt: skip
    b = get_backend("cpu", "float64")
    model = logistic_regression(X.shape[1])
    params = model.init_params(b, host_rng(0))
    result = fit(model, params, b.asarray(X), b.asarray(y, dtype=b.xp.int64),
                 optimizer=make_optimizer("lbfgs", weight_decay=lam), epochs=60)  # fmt: skip
    theta = np.r_[b.to_numpy(params["W1"])[:, 0], b.to_numpy(params["b1"])]
    np.testing.assert_allclose(theta, ref.x, atol=1e-6, rtol=0)
    assert result.state["loss"] == pytest.approx(ref.fun, abs=1e-10)


def _digits(b, rows=200, labels=True):
    X, y = load_dataset("digits")
    X, y = X[:rows], y[:rows]
    return b.asarray(X), b.asarray(y, dtype=b.xp.int64) if labels else b.asarray(y[:, None])


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_mlp_objective_never_rises_between_iterations(activation, weight_decay):
    b = get_backend("cpu", "float64")
    X, y = _digits(b)
    model = MLP((64, 20, 10), activation=activation, loss="cross_entropy")
    params = model.init_params(b, host_rng(3))
    objective = []
    result = fit(model, params, X, y, optimizer=make_optimizer("lbfgs", weight_decay=weight_decay),
                 epochs=40, callback=lambda e, p, s, r: objective.append(s["loss"]))  # fmt: skip
    assert all(later <= earlier for earlier, later in itertools.pairwise(objective))
    if weight_decay == 0:  # the recorded loss is the objective
        assert result.history["loss"] == objective
    assert result.history["loss"][-1] < 0.05 * result.history["loss"][0]


def test_every_backend_takes_the_numpy_steps(backend):
    """Five iterations, a few line searches each, on every backend, equal NumPy's."""
    b64 = get_backend("cpu", "float64")
    runs = []
    for be in (b64, backend):
        X, y = _digits(be, rows=120)
        model = MLP((64, 8, 10), activation="tanh", loss="cross_entropy")
        params = model.init_params(be, host_rng(0))
        history = fit(model, params, X, y, optimizer=make_optimizer("lbfgs", weight_decay=1e-3),
                      epochs=5).history  # fmt: skip
        runs.append((params, history))
    (p0, h0), (p1, h1) = runs
    for k in p0:
        assert_close(p1[k], p0[k], 1e-9, 1e-9)
    assert_close(h1["loss"], h0["loss"], 1e-10)


def test_float32_keeps_every_array_float32():
    b = get_backend("cpu", "float32")
    X, y = _digits(b, rows=100)
    model = MLP((64, 8, 10), loss="cross_entropy")
    params = model.init_params(b, host_rng(0))
    result = fit(model, params, X, y, optimizer=make_optimizer("lbfgs"), epochs=3)
    for tree in (params, *(v for v in result.state.values() if isinstance(v, dict))):
        assert all(v.dtype == b.dtype for v in tree.values())


@pytest.mark.parametrize("split", [1, 4, 9])
def test_a_continued_fit_equals_one_fit_bit_for_bit(split):
    """fit(12) = fit(split) then fit to 12 from its state: the curvature pairs, gradient
    and host values in the state are all a resume needs."""
    b = get_backend("cpu", "float64")
    X, y = _digits(b)
    model = MLP((64, 16, 10), activation="tanh", loss="cross_entropy")
    opt = make_optimizer("lbfgs", weight_decay=1e-4)
    whole = model.init_params(b, host_rng(0))
    fit(model, whole, X, y, optimizer=opt, epochs=12)
    part = model.init_params(b, host_rng(0))
    first = fit(model, part, X, y, optimizer=opt, epochs=split)
    state = {k: dict(v) if isinstance(v, dict) else v for k, v in first.state.items()}
    fit(model, part, X, y, optimizer=opt, epochs=12, state=state, start_epoch=split)
    for k in whole:
        np.testing.assert_array_equal(b.to_numpy(part[k]), b.to_numpy(whole[k]))


def test_replicas_are_their_single_fits():
    """Three replicas (seeds, weight decays, first steps) in lockstep line searches are
    the three fits, bit for bit on NumPy."""
    b = get_backend("cpu", "float64")
    X, y = _digits(b)
    model = MLP((64, 12, 10), activation="tanh", loss="cross_entropy")
    decays, lrs = [0.0, 1e-3, 1e-2], [1.0, 0.5, 2.0]
    singles = []
    for seed, wd, lr in zip(range(3), decays, lrs, strict=True):
        params = model.init_params(b, host_rng(seed))
        history = fit(model, params, X, y, optimizer=make_optimizer("lbfgs", lr, weight_decay=wd),
                      epochs=10).history  # fmt: skip
        singles.append((params, history))
    stacked = init_replicas(model, b, [host_rng(s) for s in range(3)])
    opt = per_replica(make_optimizer("lbfgs"), lr=lrs, weight_decay=decays, like=stacked["W1"])
    result = fit(model, stacked, X, y, optimizer=opt, epochs=10)
    for r, (params, history) in enumerate(singles):
        assert result.history[r]["loss"] == history["loss"]
        for k in params:
            np.testing.assert_array_equal(b.to_numpy(stacked[k][r]), b.to_numpy(params[k]))


def test_batch_norm_renews_its_statistics_once_per_iteration(backend):
    """Full batch in training mode: the objective is deterministic, and the running
    statistics move once per iteration, from the accepted point."""
    X, y = _digits(backend, rows=100)
    model = MLP((64, 8, 10), loss="cross_entropy", norm="batch")
    params = model.init_params(backend, host_rng(0))
    before = backend.to_numpy(params["running_mean1"])
    result = fit(model, params, X, y, optimizer=make_optimizer("lbfgs"), epochs=4)
    assert not np.array_equal(backend.to_numpy(params["running_mean1"]), before)
    h = result.history["loss"]
    assert all(b <= a for a, b in itertools.pairwise(h))


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"batch_size": 10}, "batch_size"),
        ({"clip_grad": 1.0}, "clip_grad"),
        ({"schedule": "step"}, "schedule"),
        ({"dropout": 0.1}, "dropout"),
    ],
)
def test_fit_refuses_what_a_line_search_cannot_take(kwargs, setting):
    from model.schedules import Schedule

    b = get_backend("cpu", "float64")
    X, y = _digits(b, rows=50)
    dropout = kwargs.pop("dropout", 0.0)
    model = MLP((64, 8, 10), loss="cross_entropy", dropout=dropout)
    if "schedule" in kwargs:
        kwargs["schedule"] = Schedule(kwargs["schedule"])
    params = model.init_params(b, host_rng(0))
    with pytest.raises(ConfigError, match="L-BFGS takes no") as caught:
        fit(model, params, X, y, optimizer=make_optimizer("lbfgs"), epochs=2, **kwargs)
    assert caught.value.setting == setting


@pytest.mark.parametrize(
    "options, message",
    [
        ({"memory": 0}, "memory must be an integer >= 1"),
        ({"max_evals": 1.5}, "max_evals must be an integer >= 1"),
        ({"c1": 0.9}, "c1 must be"),
        ({"c1": 1e-4, "c2": 1e-5}, "c2 must be"),
        ({"lr": 0.0}, "lr must be"),
    ],
)
def test_lbfgs_settings_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        LBFGS(**options)


def test_update_is_refused():
    with pytest.raises(ConfigError, match="train it with fit and no batch size"):
        LBFGS().update({}, {}, {})


def test_memory_bounds_the_pairs_kept():
    b = get_backend("cpu", "float64")
    X, y = _digits(b)
    model = MLP((64, 8, 10), loss="cross_entropy")
    params = model.init_params(b, host_rng(0))
    result = fit(model, params, X, y, optimizer=make_optimizer("lbfgs", memory=3), epochs=8)
    state = result.state
    assert sorted(k for k, v in state.items() if isinstance(v, dict)) == sorted(
        ["g", "s0", "s1", "s2", "y0", "y1", "y2"])  # fmt: skip
    assert len(state["rho"]) == 3 and all(r > 0 for r in state["rho"])
    assert state["step"] == 8 and state["stalled"] is False
