"""The in-place variants of the step's operations (model/variants.py) against the portable
code they stand for: each operation bit for bit, and whole fits of every layer, head and
optimizer. The reference is the portable code (``HANDGRAD_FAST=0``), whose gradients are
checked against finite differences elsewhere; each comparison first checks that the
in-place variants really ran, so that it cannot pass as portable against portable."""

from __future__ import annotations

import _cli
import numpy as np
import pytest
import train
from helpers import assert_on

from backends import ConfigError, get_backend, host_rng
from model import MLP, fit, make_optimizer
from model.activations import ACTIVATIONS
from model.config import RunConfig
from model.losses import logit_grad
from model.optimizers import SGD
from model.run import Run
from model.variants import ENV_VAR, fast_enabled, step_name

HEADS = [  # (loss, output activation): every loss, and the other heads' activations
    ("cross_entropy", None),
    ("bce", None),
    ("mse", "identity"),
    ("sse", "sigmoid"),
    ("mse", "relu"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_each_activation_in_place_equals_its_portable_code_bit_for_bit(dtype, name):
    """Forward into its own input and backward into the upstream gradient, on values up
    to the dtype's range (sigmoid's clamp, relu's zeros included)."""
    xp = get_backend("cpu", dtype).xp
    rng = np.random.default_rng(len(name))
    z = rng.normal(0, 30, (7, 5)).astype(dtype)
    big = np.finfo(dtype).max if name != "softmax" else 1e4  # a row's spread overflows
    z[0, :3] = [0.0, big, -big]
    f, g = ACTIVATIONS[name]
    a = f(z, xp=xp)
    written = f(z.copy(), xp=xp, out=(into := z.copy()))
    assert written is into or name == "identity"  # the identity returns its input
    np.testing.assert_array_equal(written, a)
    dA = rng.normal(size=z.shape).astype(dtype)
    expected = g(dA, a, xp=xp)
    got = g(dA.copy(), a, xp=xp, out=(into := dA.copy()))
    np.testing.assert_array_equal(got, expected)


def test_the_logit_gradient_in_place_equals_the_portable_one():
    xp = get_backend("cpu", "float64").xp
    rng = np.random.default_rng(0)
    p, y = rng.uniform(size=(9, 4)), np.eye(4)[rng.integers(0, 4, 9)]
    expected = logit_grad(p, y, xp=xp, scale=0.3)
    got = logit_grad(p.copy(), y, xp=xp, scale=0.3, out=(into := p.copy()))
    assert got is into
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(expected, 0.3 * (p - y) / 9, rtol=1e-15)


def _data(backend, loss, outputs, rng, n=29):
    X = backend.asarray(rng.normal(size=(n, 5)))
    if loss == "cross_entropy":
        return X, backend.asarray(rng.integers(0, outputs, n), dtype=backend.xp.int64)
    if loss == "bce":
        return X, backend.asarray(rng.integers(0, 2, (n, 1)))
    return X, backend.asarray(rng.normal(size=(n, outputs)))


def _fit(monkeypatch, fast, model, backend, X, Y, optimizer, **kwargs):
    monkeypatch.setenv(ENV_VAR, "1" if fast else "0")
    assert step_name(backend.xp) == ("in-place" if fast else "portable")
    params = model.init_params(backend, host_rng(3))
    result = fit(model, params, X, Y, optimizer=optimizer, rng=host_rng(4), **kwargs)
    return result.params, result.state, result.history


def _compare(monkeypatch, dtype, model, opt, loss):
    """12 steps on batches of 8 and a short last batch of 5: the same parameters, buffers
    and losses with the variants as without, bit for bit."""
    backend = get_backend("cpu", dtype)
    X, Y = _data(backend, loss, model.n_outputs, np.random.default_rng(7))
    runs = [
        _fit(monkeypatch, fast, model, backend, X, Y, opt, epochs=3, batch_size=8)
        for fast in (True, False)
    ]
    (fast, fast_state, fast_history), (portable, portable_state, portable_history) = runs
    arrays = [(k, p, portable[k]) for k, p in fast.items()]
    for kind in ("velocity", "m", "s"):
        buffers = fast_state.get(kind, {})
        arrays += [(f"{kind} {k}", a, portable_state[kind][k]) for k, a in buffers.items()]
    for k, a, expected in arrays:
        assert_on(backend, a)
        np.testing.assert_array_equal(a, expected, err_msg=k)
    for k, p in fast.items():
        if k in model.trained:
            assert not np.array_equal(p, model.init_params(backend, host_rng(3))[k]), k
    assert fast_state["step"] == portable_state["step"] == 12
    np.testing.assert_array_equal(fast_history["loss"], portable_history["loss"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("decay", [0.0, 0.05], ids=["no-decay", "weight-decay"])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu", "identity", "softmax"])
@pytest.mark.parametrize("loss,output", HEADS)
def test_in_place_step_equals_the_portable_step(
    monkeypatch, dtype, bias, decay, hidden, loss, output
):
    outputs = 1 if loss == "bce" else 3
    model = MLP((5, 6, 4, outputs), activation=(hidden, "sigmoid"), output=output, loss=loss,
                bias=bias)  # fmt: skip
    _compare(monkeypatch, dtype, model, SGD(0.3, weight_decay=decay), loss)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("decay", [0.0, 0.05], ids=["no-decay", "weight-decay"])
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam"])
@pytest.mark.parametrize("loss,output", [HEADS[0], HEADS[3]])
def test_in_place_optimizers_equal_the_portable_ones(monkeypatch, dtype, decay, name, loss, output):
    """Momentum, Nesterov and Adam, with and without weight decay, on both kinds of
    output head: as the portable step, every buffer of the optimizer state included."""
    outputs = 1 if loss == "bce" else 3
    model = MLP((5, 6, 4, outputs), activation="tanh", output=output, loss=loss)
    _compare(monkeypatch, dtype, model, make_optimizer(name, 0.05, weight_decay=decay), loss)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_in_place_normalization_and_dropout_equal_the_portable_code(monkeypatch, dtype, norm,
                                                                   dropout):  # fmt: skip
    """The layers that write into their input (normalizations, dropout, a separate
    activation) and the running statistics BatchNorm renews: as the portable code."""
    model = MLP((5, 6, 4, 3), activation="relu", loss="cross_entropy", norm=norm, dropout=dropout)
    _compare(monkeypatch, dtype, model, make_optimizer("momentum", 0.05, weight_decay=0.01),
             "cross_entropy")  # fmt: skip


def test_the_in_place_forward_writes_into_arrays_it_owns_and_only_those(monkeypatch):
    """A Dense layer's activation is applied to its own product, a normalization writes
    into the Dense output it follows; the caller's X and the cached arrays a backward
    reads stay as they were."""
    backend = get_backend("cpu", "float64")
    model = MLP((5, 6, 3), activation="tanh", loss="cross_entropy", norm="layer")
    plain = MLP((5, 6, 3), activation="tanh", loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    X = backend.asarray(np.random.default_rng(1).normal(size=(4, 5)))
    before = X.copy()
    out, (caches, _) = model.forward(params, X, train=True, inplace=True)
    np.testing.assert_array_equal(X, before)
    dense_cache, norm_cache = caches[0], caches[1]
    assert norm_cache[0] is dense_cache[1]  # X^ written into the Dense layer's Z
    portable, _ = model.forward(params, X, train=True)
    np.testing.assert_array_equal(out, portable)
    p = plain.init_params(backend, host_rng(0))
    _, (caches, _) = plain.forward(p, X, inplace=True)
    assert caches[0][2] is caches[0][1]  # tanh written into Z
    _, (caches, _) = plain.forward(p, X)
    assert caches[0][2] is not caches[0][1]


def test_full_batch_step_leaves_the_data_as_it_was(monkeypatch):
    """Without batching the step gets X itself: it writes only its own arrays."""
    backend = get_backend("cpu", "float64")
    model = MLP((5, 6, 3), activation="sigmoid", loss="cross_entropy")
    X, Y = _data(backend, "cross_entropy", 3, np.random.default_rng(1))
    before = X.copy(), Y.copy()
    _fit(monkeypatch, True, model, backend, X, Y, SGD(0.5), epochs=4)
    np.testing.assert_array_equal(X, before[0])
    np.testing.assert_array_equal(Y, before[1])


@pytest.mark.parametrize("spec,switch,step", [("cpu", "1", "in-place"), ("cpu", "0", "portable"),
                                              ("strict", "1", "portable")])  # fmt: skip
def test_the_variants_are_chosen_by_namespace_and_switch(monkeypatch, spec, switch, step):
    monkeypatch.setenv(ENV_VAR, switch)
    assert step_name(get_backend(spec).xp) == step


@pytest.mark.parametrize("value", ["2", "yes", "off", " 2"])
def test_a_bad_switch_is_an_error_naming_it_as_set(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ConfigError, match=f"{ENV_VAR}='{value}' is not understood"):
        fast_enabled()


@pytest.mark.parametrize("value,on", [("", True), ("  ", True), (" 1\n", True), ("0 ", False)])
def test_a_blank_switch_is_unset_and_spaces_do_not_count(monkeypatch, value, on):
    """As HANDGRAD_DEVICE and HANDGRAD_BLAS_THREADS: blank means unset."""
    monkeypatch.setenv(ENV_VAR, value)
    assert fast_enabled() is on


def test_the_cli_refuses_a_bad_switch_before_reading_data(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, "2")
    missing = tmp_path / "absent.csv"  # read only after the check: its error would win
    argv = ["--device", "cpu", "--data", str(missing), "--out", str(tmp_path / "r")]
    rc = _cli.run(train.main, argv, train.FLAGS)
    err = capsys.readouterr().err
    assert rc == 2 and f"{ENV_VAR}='2'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("switch,step", [("1", "in-place"), ("0", "portable")])
def test_a_run_records_its_step(tmp_path, monkeypatch, switch, step):
    monkeypatch.setenv(ENV_VAR, switch)
    config = RunConfig(dataset="iris", hidden=(4,), batch_size=16, lr=0.05, epochs=2)
    summary = Run.start(config, tmp_path / "r").train("cpu")
    assert summary["step"] == step


def test_a_resume_that_switches_the_step_records_the_change(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")
    config = RunConfig(dataset="iris", hidden=(4,), batch_size=16, lr=0.05, epochs=2)
    Run.start(config, tmp_path / "r").train("cpu")
    monkeypatch.setenv(ENV_VAR, "0")
    summary = Run.resume(tmp_path / "r", epochs=4).train("cpu")
    assert summary["step"] == "portable"
    assert summary["changes"] == [
        {"at_epoch": 2, "epochs": [2, 4], "step": ["in-place", "portable"]}
    ]
    run = Run.resume(tmp_path / "r", epochs=6)
    run.changes.pop()  # as a resume that changes no setting (an interrupted run's) has it
    run.resumed = None
    monkeypatch.setenv(ENV_VAR, "1")
    summary = run.train("cpu")
    assert summary["changes"][-1] == {"at_epoch": 4, "step": ["portable", "in-place"]}


def test_two_resumes_at_one_epoch_keep_their_own_changes(tmp_path, monkeypatch):
    """A resume interrupted before its first epoch leaves its changes in the checkpoint at
    the epoch it started from; a second resume from there that switches the step back
    adds its own entry, and the first one still says what ran before it."""
    config = RunConfig(dataset="iris", hidden=(4,), batch_size=16, lr=0.05, epochs=2)
    monkeypatch.setenv(ENV_VAR, "1")
    Run.start(config, tmp_path / "r").train("cpu")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setenv(ENV_VAR, "0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("model.run._DeviceSnapshot.take", interrupt)
        with pytest.raises(KeyboardInterrupt):
            Run.resume(tmp_path / "r", epochs=4, lr=0.01).train("cpu")
    monkeypatch.setenv(ENV_VAR, "1")
    summary = Run.resume(tmp_path / "r", epochs=4).train("cpu")
    assert summary["changes"] == [
        {"at_epoch": 2, "epochs": [2, 4], "lr": [0.05, 0.01], "step": ["in-place", "portable"]},
        {"at_epoch": 2, "step": ["portable", "in-place"]},
    ]
