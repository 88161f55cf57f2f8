"""Networks and the seed systems: gradients against finite differences, the seeds'
own results, closed-form and scikit-learn optima, and agreement across backends."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import seed_004
from helpers import assert_close, assert_on, random_targets, tolerance

from backends import get_backend, host_rng, legacy_rng
from model import (
    MLP,
    SGD,
    fit,
    gradcheck_model,
    logistic_regression,
    make_optimizer,
    relu_neuron,
    single_neuron,
    two_layer,
)
from model.activations import ACTIVATIONS
from model.losses import LOSSES

HIDDEN = list(ACTIVATIONS)
HEADS = [("sse", o) for o in ACTIVATIONS] + [("mse", o) for o in ACTIVATIONS]
HEADS += [("bce", "sigmoid"), ("cross_entropy", "softmax")]


def _params_off_kinks(model, backend, X, rng):
    """Random parameters (biases too) whose pre-activations all keep |z| > 0.1, so the
    finite-difference steps (2h = 2e-3 on one parameter) never straddle ReLU's kink."""
    xp = backend.xp
    while True:
        params = {
            k: backend.asarray(rng.normal(0, 0.8, s)) for k, s in model.param_shapes().items()
        }
        A, margins = X, []
        for l in range(1, model.depth + 1):
            Z = A @ params[f"W{l}"] + params[f"b{l}"]
            margins.append(float(xp.min(xp.abs(Z))))
            A = ACTIVATIONS[model.layer_activations[l - 1]][0](Z, xp=xp)
        if min(margins) > 0.1:
            return params


@pytest.mark.parametrize("device_spec", ["cpu", "strict"], indirect=True)
@pytest.mark.parametrize("loss,output", HEADS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_loss_and_activation_passes_gradcheck(backend, loss, output, hidden):
    rng = np.random.default_rng(zlib.crc32(f"{loss}-{output}-{hidden}".encode()))
    k = 1 if loss == "bce" else 3  # bce is binary: one output
    model = MLP((4, 5, 3, k), activation=hidden, output=output, loss=loss)
    X = backend.asarray(rng.normal(size=(6, 4)))
    Y = random_targets(backend, loss, (6, k), rng)
    errors = gradcheck_model(model, _params_off_kinks(model, backend, X, rng), X, Y)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize(
    "model",
    [single_neuron(1), single_neuron(3), relu_neuron(3), logistic_regression(3), two_layer()],
)
def test_seed_models_pass_gradcheck(backend, model):
    rng = np.random.default_rng(3)
    X = backend.asarray(rng.normal(size=(7, model.sizes[0])))
    loss = model.loss
    Y = (
        random_targets(backend, loss, (7, 1), rng)
        if loss == "bce"
        else backend.asarray(rng.uniform(size=(7, 1)))
    )
    params = (
        model.init_params(backend, host_rng(4))
        if model.bias
        else model.init_params(backend, legacy_rng(10), init="uniform")
    )
    if model.layer_activations[-1] == "relu":
        params = _params_off_kinks(model, backend, X, rng)
    assert max(gradcheck_model(model, params, X, Y).values()) < 1e-6


def test_gradcheck_catches_a_wrong_gradient(backend):
    model = MLP((3, 4, 2), activation="tanh", loss="mse")
    rng = np.random.default_rng(0)
    X, Y = backend.asarray(rng.normal(size=(5, 3))), backend.asarray(rng.normal(size=(5, 2)))
    params = model.init_params(backend, host_rng(0))
    from model.gradcheck import gradcheck

    _, cache = model.forward(params, X)
    grads = model.backward(params, cache, Y)
    grads["W1"] = grads["W1"] * 1.01  # a 1% error must be seen
    errors = gradcheck(lambda p: model.loss_value(p, X, Y), params, grads)
    assert errors["W1"] > 5e-3 and errors["W2"] < 1e-6


def _neuron(backend, w0, b0, x=3.0, y=0.0):
    model = single_neuron(1)
    params = {"W1": backend.asarray(np.array([[w0]])), "b1": backend.asarray(np.array([b0]))}
    return model, params, backend.asarray(np.array([[x]])), backend.asarray(np.array([[y]]))


def test_single_neuron_cost_falls_monotonically(numpy_backend):
    model, params, X, Y = _neuron(numpy_backend, 0.5, 2.0)
    history = fit(model, params, X, Y, optimizer=SGD(0.05), epochs=5000).history["loss"]
    assert np.all(np.diff(history) < 0)
    assert history[-1] < 1e-3 * history[0]


def test_tutorials_stated_gradient_sign_makes_cost_rise(numpy_backend):
    """Seeds 000/001 state C'(y_hat) = y - y_hat; following it ascends the cost."""
    x, y, w, b, lr = 3.0, 0.0, 0.5, 2.0, 0.05
    cost = []
    for _ in range(50):
        y_hat = 1 / (1 + np.exp(-(w * x + b)))
        cost.append(0.5 * (y - y_hat) ** 2)
        common = (y - y_hat) * y_hat * (1 - y_hat)  # the tutorial's dC/dz
        w, b = w - lr * common * x, b - lr * common
    assert np.all(np.diff(cost) > 0)
    # handgrad's sign on the same start: the first step lowers the cost.
    model, params, X, Y = _neuron(numpy_backend, 0.5, 2.0)
    history = fit(model, params, X, Y, optimizer=SGD(lr), epochs=2).history["loss"]
    assert history[1] < history[0] == pytest.approx(cost[0])


def test_saturated_neuron_barely_learns(numpy_backend):
    """w0 = 3: z = 11, sigma'(z) ~ 1.7e-5, so 5000 steps move the cost by well under 1%."""
    model, params, X, Y = _neuron(numpy_backend, 3.0, 2.0)
    history = fit(model, params, X, Y, optimizer=SGD(0.05), epochs=5000).history["loss"]
    assert history[-1] > 0.99 * history[0]


def test_two_layer_equals_seed_code(numpy_backend, capsys):
    reference = seed_004.NeuralNetwork()
    reference.gradient_descent(seed_004.X, seed_004.y, 10000)
    printed = capsys.readouterr().out
    model = two_layer()
    params = model.init_params(numpy_backend, legacy_rng(10), init="uniform")
    X, Y = numpy_backend.asarray(seed_004.X), numpy_backend.asarray(seed_004.y)
    fit(model, params, X, Y, optimizer=SGD(1.0), epochs=9999)
    last_prediction = numpy_backend.to_numpy(model.predict(params, X))  # what the seed prints
    fit(model, params, X, Y, optimizer=SGD(1.0), epochs=10000, start_epoch=9999)
    assert_close(numpy_backend.to_numpy(params["W1"]), reference.wij, 1e-10)
    assert_close(numpy_backend.to_numpy(params["W2"]), reference.wjk, 1e-10)
    expected = np.array([float(v) for v in printed.replace("[", " ").replace("]", " ").split()[7:]])
    assert_close(last_prediction.ravel(), expected, 1e-6)  # the seed prints 8 digits


def test_logistic_regression_with_weight_decay_matches_sklearn(numpy_backend):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X_h, y_h = load_breast_cancer(return_X_y=True)
    X_h = StandardScaler().fit_transform(X_h)
    m, lam = X_h.shape[0], 0.05
    ref = LogisticRegression(C=1 / (lam * m), tol=1e-12, max_iter=100_000).fit(X_h, y_h)
    model = logistic_regression(X_h.shape[1])
    params = model.init_params(numpy_backend, host_rng(0), init="zeros")
    X, Y = numpy_backend.asarray(X_h), numpy_backend.asarray(y_h[:, None])
    fit(model, params, X, Y, optimizer=SGD(0.5, weight_decay=lam), epochs=4000)
    assert_close(numpy_backend.to_numpy(params["W1"])[:, 0], ref.coef_[0], 1e-4)
    assert_close(numpy_backend.to_numpy(params["b1"]), ref.intercept_, 1e-4)


def test_relu_neuron_converges_to_least_squares(numpy_backend):
    rng = np.random.default_rng(11)
    X_h = rng.normal(size=(200, 3))
    y_h = X_h @ np.array([0.5, -0.3, 0.2]) + 3.0 + rng.normal(0, 0.1, 200)
    assert y_h.min() > 0
    coef, *_ = np.linalg.lstsq(np.c_[X_h, np.ones(200)], y_h, rcond=None)
    model = relu_neuron(3)
    params = {
        "W1": numpy_backend.asarray(np.zeros((3, 1))),
        "b1": numpy_backend.asarray(np.ones(1)),
    }
    fit(
        model,
        params,
        numpy_backend.asarray(X_h),
        numpy_backend.asarray(y_h),
        optimizer=SGD(0.2),
        epochs=2000,
    )
    assert_close(numpy_backend.to_numpy(params["W1"])[:, 0], coef[:3], 1e-8)
    assert_close(numpy_backend.to_numpy(params["b1"]), coef[3:], 1e-8)


AGREEMENT_MODELS = {  # every layer kind and loss of the seed systems, and a hidden tanh
    "tanh-mlp": MLP((8, 16, 3), activation="tanh", loss="cross_entropy"),
    "two-layer": two_layer(),
    "relu-neuron": relu_neuron(8),
    "logistic": logistic_regression(8),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("model", AGREEMENT_MODELS.values(), ids=AGREEMENT_MODELS.keys())
def test_same_seed_same_parameters_on_every_backend(other_backend, model, dtype, optimizer):
    """10 shuffled minibatch steps from the same host-drawn start end where NumPy's do, to
    rounding: what makes the long runs above, checked on NumPy, hold on every backend."""
    b = other_backend.with_dtype(dtype)
    reference = get_backend("cpu", dtype)
    X_h = np.random.default_rng(5).normal(size=(40, model.sizes[0]))
    results = []
    for be in (b, reference):
        params = model.init_params(be, host_rng(1))
        Y = random_targets(be, model.loss, (40, model.sizes[-1]), np.random.default_rng(6))
        opt = make_optimizer(optimizer, 0.05, weight_decay=1e-3)
        res = fit(
            model,
            params,
            be.asarray(X_h),
            Y,
            optimizer=opt,
            epochs=2,
            batch_size=8,
            rng=host_rng(2),
        )  # 10 steps
        assert res.state["step"] == 10
        results.append(res)
    for name, p in results[0].params.items():
        assert_on(b, p)
        assert_close(b.to_numpy(p), results[1].params[name], rtol=tolerance(b), atol=tolerance(b))


def test_float32_fit_keeps_every_array_float32(backend):
    b = backend.with_dtype("float32")
    model = MLP((4, 6, 3), activation="sigmoid", loss="cross_entropy")
    rng = np.random.default_rng(0)
    X, y = b.asarray(rng.normal(size=(30, 4))), b.asarray(rng.integers(0, 3, 30), dtype=b.xp.int64)
    params = model.init_params(b, host_rng(0))
    res = fit(
        model, params, X, y, optimizer=make_optimizer("momentum", 0.1), epochs=2, batch_size=8
    )
    _, cache = model.forward(res.params, X)
    grads = model.backward(res.params, cache, y)
    cached = [a for layer in cache[0] for a in layer if a is not None]
    for arr in (*res.params.values(), *res.state["velocity"].values(), *cached, *grads.values()):
        assert arr.dtype == b.xp.float32


def test_invalid_model_configurations_name_the_fix():
    with pytest.raises(ValueError, match="use output='sigmoid'"):
        MLP((3, 1), output="relu", loss="bce")
    with pytest.raises(ValueError, match="unknown activation 'swish'; use one of"):
        MLP((3, 4, 1), activation="swish")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        MLP((3, 1), loss="hinge")
    with pytest.raises(ValueError, match="at least 2 positive integers"):
        MLP((3,))
    with pytest.raises(ValueError, match="use loss 'bce'"):
        MLP((3, 1), loss="cross_entropy")
    assert set(LOSSES) == {"sse", "mse", "bce", "cross_entropy"}
