"""Each layer's hand-derived backward against central finite differences in float64 and
against PyTorch's autograd (a second implementation; skipped without PyTorch), BatchNorm's
running statistics and evaluation mode against torch.nn.BatchNorm1d, dropout's masks, and
networks built from the layers: parameter names, roles, files and errors."""

from __future__ import annotations

import json
import zlib

import _cli
import numpy as np
import predict
import pytest
import train
from helpers import assert_close, tolerance

from backends import ConfigError, get_backend, host_rng
from model import MLP, Activation, BatchNorm, Dense, Dropout, LayerNorm, Sequential, fit
from model.activations import ACTIVATIONS
from model.data import load_dataset
from model.gradcheck import gradcheck
from model.layers import Noise
from model.optimizers import make_optimizer
from model.trained import TrainedModel

LAYERS = {
    **{f"dense-{a}": Dense(4, 3, a) for a in ACTIVATIONS},
    "dense-no-bias": Dense(4, 3, "tanh", bias=False),
    **{f"activation-{a}": Activation(a) for a in ACTIVATIONS},
    "layer-norm": LayerNorm(4),
    "batch-norm": BatchNorm(4),
    "dropout": Dropout(0.4),
}


def _layer_case(backend, name, rng):
    """(layer, params, X, dY), drawn again until every value a relu sees keeps |z| > 0.1,
    so that no finite-difference step straddles its kink."""
    layer = LAYERS[name]
    while True:
        X = rng.normal(0, 1.5, (6, 4))
        params = {k: rng.normal(1.0 if p.fill == "ones" else 0.0, 0.5, p.shape)
                  for k, p in layer.params().items()}  # fmt: skip
        if "running_var" in params:
            params["running_var"] = rng.uniform(0.5, 2.0, layer.features)
        z = X @ params["W"] + params.get("b", 0.0) if isinstance(layer, Dense) else X
        if np.min(np.abs(z)) > 0.1:
            break
    width = layer.outputs if isinstance(layer, Dense) else 4
    dY = rng.normal(size=(6, width))
    return layer, {k: backend.asarray(v) for k, v in params.items()}, backend.asarray(X), (
        backend.asarray(dY))  # fmt: skip


def _noise():
    """The same dropout mask at every call: a fresh generator of one seed."""
    return Noise(host_rng(7), 6)


@pytest.mark.parametrize("train", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_backward_matches_finite_differences(backend, name, train):
    """C = sum(dY * Y(params, X)): backward's gradients of the trained parameters and dX
    against central differences in float64, in training mode (batch statistics, a fixed
    dropout mask) and in evaluation mode."""
    xp = backend.xp
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    layer, params, X, dY = _layer_case(backend, name, rng)
    _, cache = layer.forward(params, X, train=train, noise=_noise())
    dX, grads = layer.backward(params, cache, dY)
    trained = {k: v for k, v in params.items() if layer.params()[k].trained}
    assert set(grads) == set(trained)

    def loss(p):
        out, _ = layer.forward({**params, **p}, p["X"], train=train, noise=_noise())
        return xp.sum(dY * out)

    errors = gradcheck(loss, {**trained, "X": X}, {**grads, "X": dX})
    assert max(errors.values()) < 1e-7, errors


def _torch():
    return pytest.importorskip("torch")


def _torch_forward(layer, params, X, train, mask):
    """The layer's forward in PyTorch on float64 tensors that require grad."""
    t = _torch()
    F = t.nn.functional
    acts = {"identity": lambda z: z, "sigmoid": t.sigmoid, "tanh": t.tanh, "relu": F.relu,
            "softmax": lambda z: t.softmax(z, dim=-1)}  # fmt: skip
    if isinstance(layer, Dense):
        z = X @ params["W"] + (params["b"] if layer.bias else 0.0)
        return acts[layer.activation](z)
    if isinstance(layer, Activation):
        return acts[layer.name](X)
    if isinstance(layer, LayerNorm):
        return F.layer_norm(X, (layer.features,), params["gamma"], params["beta"], eps=1e-5)
    if isinstance(layer, BatchNorm):
        mean, var = params["running_mean"].clone(), params["running_var"].clone()
        out = F.batch_norm(X, mean, var, params["gamma"], params["beta"], training=train,
                           momentum=0.1, eps=1e-5)  # fmt: skip
        params["new_mean"], params["new_var"] = mean, var  # batch_norm renews them in place
        return out
    return X * t.as_tensor(mask) if train else X


@pytest.mark.parametrize("train", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_agrees_with_pytorch_autograd(numpy_backend, name, train):
    """Forward, every gradient and BatchNorm's renewed running statistics against
    PyTorch's own layers and autograd (float64), the dropout mask shared."""
    t = _torch()
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 1)
    layer, params, X, dY = _layer_case(numpy_backend, name, rng)
    Y, cache = layer.forward(params, X, train=train, noise=_noise())
    dX, grads = layer.backward(params, cache, dY)
    mask = cache if isinstance(layer, Dropout) and train else None
    tp = {k: t.tensor(v, requires_grad=layer.params()[k].trained) for k, v in params.items()}
    tX = t.tensor(X, requires_grad=True)
    out = _torch_forward(layer, tp, tX, train, mask)
    (out * t.tensor(dY)).sum().backward()
    np.testing.assert_allclose(Y, out.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-10, atol=1e-13)
    for k, g in grads.items():
        np.testing.assert_allclose(g, tp[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)
    if isinstance(layer, BatchNorm) and train:
        state = layer.new_state(cache)
        np.testing.assert_allclose(state["running_mean"], tp["new_mean"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(state["running_var"], tp["new_var"].numpy(), rtol=1e-12)


def test_dropout_keeps_each_value_with_probability_1_minus_rate_and_scales_it():
    b = get_backend("cpu", "float64")
    X = b.asarray(np.ones((2000, 50)))
    Y, _ = Dropout(0.3).forward({}, X, train=True, noise=Noise(host_rng(0), 2000))
    kept = Y != 0
    assert abs(float(np.mean(kept)) - 0.7) < 0.01
    np.testing.assert_allclose(Y[kept], 1 / 0.7, rtol=1e-15)
    assert Dropout(0.3).forward({}, X, train=False)[0] is X


def test_dropout_draws_come_from_the_seed_and_a_rank_draws_its_rows_of_the_batch():
    """Noise(rng, rows, part): every rank draws the whole batch's numbers and keeps its
    rows, so the masks tile the one-process mask."""
    whole = Noise(host_rng(3), 10).uniform(5)
    parts = [Noise(host_rng(3), 10, part).uniform(5) for part in ((0, 4), (4, 10))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    stacked = Noise([host_rng(3), host_rng(4)], 10).uniform(5)
    np.testing.assert_array_equal(stacked[0], whole)
    assert not np.array_equal(stacked[1], whole)


def _digits(backend, n=300):
    X, y = load_dataset("digits")
    return backend.asarray(X[:n]), backend.asarray(y[:n], dtype=backend.xp.int64)


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_a_network_with_every_layer_equals_itself_on_every_backend(other_backend, norm):
    """Dropout (masks from the seed, drawn on the host), normalization, shuffled
    minibatches: the same parameters as on NumPy, to the dtype's tolerance."""
    net = MLP((64, 16, 8, 10), activation="relu", loss="cross_entropy", norm=norm, dropout=0.25)
    results = []
    for b in (get_backend("cpu", "float64"), other_backend):
        X, y = _digits(b)
        params = net.init_params(b, host_rng(0))
        fit(net, params, X, y, optimizer=make_optimizer("momentum", 0.05), epochs=3,
            batch_size=32, rng=host_rng(1))  # fmt: skip
        results.append({k: b.to_numpy(v) for k, v in params.items()})
    for k, v in results[0].items():
        assert_close(results[1][k], v, tolerance(other_backend), atol=1e-12)


def test_dropout_is_reproducible_per_seed_and_strict_equals_cpu_bit_for_bit():
    net = MLP((64, 16, 10), activation="tanh", loss="cross_entropy", dropout=0.3)
    runs = {}
    for spec, seed in (("cpu", 1), ("cpu", 1), ("strict", 1), ("cpu", 2)):
        b = get_backend(spec, "float64")
        X, y = _digits(b)
        params = net.init_params(b, host_rng(0))
        fit(net, params, X, y, optimizer=make_optimizer("sgd", 0.1), epochs=2, batch_size=50,
            rng=host_rng(seed))  # fmt: skip
        runs.setdefault((spec, seed), []).append({k: b.to_numpy(v) for k, v in params.items()})
    (first, again), strict, other = runs[("cpu", 1)], runs[("strict", 1)][0], runs[("cpu", 2)][0]
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
        np.testing.assert_array_equal(strict[k], first[k])
        assert not np.array_equal(other[k], first[k])


def test_parameters_are_named_after_the_dense_layer_they_follow_and_declare_roles():
    net = MLP((4, 5, 6, 2), activation="relu", loss="cross_entropy", norm="batch")
    assert list(net.param_shapes()) == [
        "W1", "b1", "gamma1", "beta1", "running_mean1", "running_var1",
        "W2", "b2", "gamma2", "beta2", "running_mean2", "running_var2", "W3", "b3",
    ]  # fmt: skip
    assert net.decayed == ("W1", "W2", "W3")
    assert "running_mean1" not in net.trained and "gamma1" in net.trained
    assert net.layer_activations == ("relu", "relu", "softmax")
    assert Sequential.from_json(net.to_json()) == net


def test_batch_norm_trains_only_on_batches_of_two_rows_or_more():
    b = get_backend("cpu", "float64")
    net = MLP((64, 8, 10), activation="relu", loss="cross_entropy", norm="batch")
    X, y = _digits(b, 301)
    with pytest.raises(ConfigError, match="leave one of 1 row; choose another batch size"):
        fit(net, net.init_params(b, host_rng(0)), X, y, optimizer=make_optimizer("sgd", 0.1),
            epochs=1, batch_size=100)  # fmt: skip


@pytest.mark.parametrize(
    "layers, loss, message",
    [
        ((), "mse", "non-empty sequence of layers"),
        ((Activation("relu"),), "mse", "at least one Dense layer"),
        ((Dense(3, 4), Dense(5, 1)), "mse", "Dense takes 5 inputs but follows a layer with 4"),
        ((Dense(3, 4), LayerNorm(5)), "mse", "LayerNorm takes 5 features"),
        ((Dense(3, 2, "relu"),), "cross_entropy", "end the network with a Dense layer of "
                                                   "activation 'softmax'"),
        ((Dense(3, 4), LayerNorm(4), LayerNorm(4)), "mse", "both have a parameter 'gamma1'"),
    ],
)  # fmt: skip
def test_a_network_that_cannot_work_is_refused_naming_why(layers, loss, message):
    with pytest.raises(ConfigError, match=message):
        Sequential(layers, loss)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Dropout(1.0), r"dropout rate must be in \[0, 1\)"),
        (lambda: Dense(0, 3), "Dense inputs must be an integer >= 1"),
        (lambda: Dense(3, 3, "swish"), "unknown activation 'swish'"),
        (lambda: BatchNorm(3, momentum=2), r"momentum must be in \[0, 1\]"),
        (lambda: LayerNorm(3, eps=0), "eps must be a number > 0"),
        (lambda: MLP((3, 4, 2), norm="group"), "unknown norm 'group'"),
    ],
)
def test_bad_layer_settings_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_stacked_normalization_gradients_pass_gradcheck(numpy_backend, norm):
    """Replica-stacked gamma, beta (R, F): the sum over replicas of their training-mode
    losses has replica r's gradient in slot r."""
    b, xp = numpy_backend, numpy_backend.xp
    rng = np.random.default_rng(5)
    net = MLP((3, 4, 2), activation="tanh", loss="mse", norm=norm)
    X, Y = b.asarray(rng.normal(size=(7, 3))), b.asarray(rng.normal(size=(7, 2)))
    params = {k: b.asarray(rng.normal(1.0, 0.4, (2, *s))) for k, s in net.param_shapes().items()}
    _, cache = net.forward(params, X, train=True)
    grads = net.backward(params, cache, Y)
    trained = {k: params[k] for k in net.trained}

    def loss(p):
        return xp.sum(net.loss_value({**params, **p}, X, Y, train=True))

    assert max(gradcheck(loss, trained, grads).values()) < 1e-7


def _eval_forward(params, X, norm):
    """An independent evaluation-mode forward in plain NumPy: relu hidden layer with its
    normalization, softmax output (dropout is the identity in evaluation)."""
    Z = X @ params["W1"] + params["b1"]
    if norm == "layer":
        Z = (Z - Z.mean(1, keepdims=True)) / np.sqrt(Z.var(1, keepdims=True) + 1e-5)
        Z = Z * params["gamma1"] + params["beta1"]
    elif norm == "batch":
        Z = (Z - params["running_mean1"]) / np.sqrt(params["running_var1"] + 1e-5)
        Z = Z * params["gamma1"] + params["beta1"]
    A = np.maximum(Z, 0)
    logits = A @ params["W2"] + params["b2"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("flags", [["--norm", "layer"], ["--norm", "batch"], ["--dropout", "0.2"]])
def test_the_new_layers_train_digits_and_predict_in_evaluation_mode(tmp_path, capsys, flags):
    """train.py with each: validation accuracy >= 0.95 on digits; predict.py's
    probabilities are the evaluation-mode forward of the saved parameters."""
    out = ["--out", str(tmp_path / "r"), "--save", str(tmp_path / "m.npz"), "--json"]
    argv = ["--device", "cpu", "--dtype", "float64", "--batch-size", "64", "--epochs", "30",
            *out, *flags]  # fmt: skip
    assert _cli.run(train.main, argv, train.FLAGS) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"]["validation"]["accuracy"] >= 0.95
    X, _ = load_dataset("digits")
    np.savez(tmp_path / "rows.npz", X=X[:40])
    argv = [str(tmp_path / "m.npz"), "--data", str(tmp_path / "rows.npz"), "--proba"]
    assert _cli.run(predict.main, argv, predict.FLAGS) == 0
    table = np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",", skiprows=1)
    trained = TrainedModel.load(tmp_path / "m.npz")
    norm = flags[1] if flags[0] == "--norm" else "none"
    expected = _eval_forward(trained.params, X[:40], norm)
    np.testing.assert_allclose(table[:, 1:], expected, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(table[:, 0], np.argmax(expected, axis=1))
