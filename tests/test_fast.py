"""The in-place step (model.fast) against the portable step it stands for.

The reference is the portable forward / backward / update (``HANDGRAD_FAST=0``), whose
gradients are checked against finite differences elsewhere; each comparison first checks
that the in-place step really ran, so that it cannot pass as portable against portable."""

from __future__ import annotations

import _cli
import numpy as np
import pytest
import train
from helpers import assert_on

from backends import ConfigError, get_backend, host_rng
from model import MLP, fit, make_optimizer
from model.config import RunConfig
from model.fast import ENV_VAR, fast_step, uses_fast_step
from model.optimizers import SGD
from model.replicas import init_replicas, per_replica
from model.run import Run

HEADS = [  # (loss, output activation): every loss, and the portable head's activations
    ("cross_entropy", None),
    ("bce", None),
    ("mse", "identity"),
    ("sse", "sigmoid"),
    ("mse", "relu"),
]


def _data(backend, loss, outputs, rng, n=29):
    X = backend.asarray(rng.normal(size=(n, 5)))
    if loss == "cross_entropy":
        return X, backend.asarray(rng.integers(0, outputs, n), dtype=backend.xp.int64)
    if loss == "bce":
        return X, backend.asarray(rng.integers(0, 2, (n, 1)))
    return X, backend.asarray(rng.normal(size=(n, outputs)))


def _fit(monkeypatch, fast, model, backend, X, Y, optimizer, **kwargs):
    monkeypatch.setenv(ENV_VAR, "1" if fast else "0")
    params = model.init_params(backend, host_rng(3))
    assert uses_fast_step(model, optimizer, params, xp=backend.xp) is fast
    result = fit(model, params, X, Y, optimizer=optimizer, rng=host_rng(4), **kwargs)
    return params, result.state, result.history


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("decay", [0.0, 0.05], ids=["no-decay", "weight-decay"])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("loss,output", HEADS)
def test_in_place_step_equals_the_portable_step(
    monkeypatch, dtype, bias, decay, hidden, loss, output
):
    """12 plain SGD steps on batches of 8 and a short last batch of 5, two hidden layers:
    the same parameters and losses as the portable step, to 1e-12 (float64) / 1e-5
    (float32)."""
    _compare(monkeypatch, dtype, bias, hidden, loss, output, SGD(0.3, weight_decay=decay))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("decay", [0.0, 0.05], ids=["no-decay", "weight-decay"])
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam"])
@pytest.mark.parametrize("loss,output", [HEADS[0], HEADS[3]])
def test_in_place_optimizers_equal_the_portable_ones(monkeypatch, dtype, decay, name, loss, output):
    """Momentum, Nesterov and Adam, with and without weight decay, on both kinds of
    output head: as the portable step, every buffer of the optimizer state included."""
    opt = make_optimizer(name, 0.05, weight_decay=decay)
    _compare(monkeypatch, dtype, True, "tanh", loss, output, opt)


def _compare(monkeypatch, dtype, bias, hidden, loss, output, opt):
    backend = get_backend("cpu", dtype)
    outputs = 1 if loss == "bce" else 3
    model = MLP((5, 6, 4, outputs), activation=(hidden, "sigmoid"), output=output,
                loss=loss, bias=bias)  # fmt: skip
    X, Y = _data(backend, loss, outputs, np.random.default_rng(7))
    runs = [
        _fit(monkeypatch, fast, model, backend, X, Y, opt, epochs=3, batch_size=8)
        for fast in (True, False)
    ]
    (fast, fast_state, fast_history), (portable, portable_state, portable_history) = runs
    tol = 1e-12 if dtype == "float64" else 1e-5
    arrays = [(k, p, portable[k]) for k, p in fast.items()]
    for buffers, kind in ((fast_state, "velocity"), (fast_state, "m"), (fast_state, "s")):
        arrays += [
            (f"{kind} {k}", a, portable_state[kind][k]) for k, a in buffers.get(kind, {}).items()
        ]
    for k, a, expected in arrays:
        assert_on(backend, a)
        scale = float(np.max(np.abs(expected)))
        np.testing.assert_allclose(a, expected, rtol=tol, atol=tol * scale, err_msg=k)
    for k, p in fast.items():
        assert not np.array_equal(p, model.init_params(backend, host_rng(3))[k])
    assert fast_state["step"] == portable_state["step"] == 12
    np.testing.assert_allclose(fast_history["loss"], portable_history["loss"], rtol=tol)


def test_full_batch_step_leaves_the_data_as_it_was(monkeypatch):
    """Without batching the step gets X itself: it writes only its own arrays."""
    backend = get_backend("cpu", "float64")
    model = MLP((5, 6, 3), activation="sigmoid", loss="cross_entropy")
    X, Y = _data(backend, "cross_entropy", 3, np.random.default_rng(1))
    before = X.copy(), Y.copy()
    _fit(monkeypatch, True, model, backend, X, Y, SGD(0.5), epochs=4)
    np.testing.assert_array_equal(X, before[0])
    np.testing.assert_array_equal(Y, before[1])


@pytest.mark.parametrize(
    "case",
    ["replicas", "softmax hidden", "strict", "communicator", "off"],
)
def test_what_the_in_place_step_does_not_cover_takes_the_portable_step(monkeypatch, case):
    backend = get_backend("strict" if case == "strict" else "cpu", "float64")
    hidden = "softmax" if case == "softmax hidden" else "sigmoid"
    model = MLP((4, 5, 3), activation=hidden, loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    optimizer = make_optimizer("sgd", 0.1)
    if case == "replicas":
        params = init_replicas(model, backend, [host_rng(0), host_rng(1)])
        optimizer = per_replica(optimizer, lr=[0.1, 0.2], like=params["W1"])
    comm = object() if case == "communicator" else None
    monkeypatch.setenv(ENV_VAR, "0" if case == "off" else "1")
    assert fast_step(model, optimizer, params, 8, xp=backend.xp, comm=comm) is None
    monkeypatch.setenv(ENV_VAR, "1")
    plain = model.init_params(get_backend("cpu", "float64"), host_rng(0))
    covered = MLP((4, 5, 3), activation="sigmoid", loss="cross_entropy")
    assert fast_step(covered, SGD(0.1), plain, 8, xp=get_backend("cpu").xp) is not None


@pytest.mark.parametrize("value", ["2", "yes", "off", " 2"])
def test_a_bad_switch_is_an_error_naming_it_as_set(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    backend = get_backend("cpu", "float64")
    model = MLP((4, 5, 3), loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    with pytest.raises(ConfigError, match=f"{ENV_VAR}='{value}' is not understood"):
        uses_fast_step(model, SGD(0.1), params, xp=backend.xp)


@pytest.mark.parametrize("value,on", [("", True), ("  ", True), (" 1\n", True), ("0 ", False)])
def test_a_blank_switch_is_unset_and_spaces_do_not_count(monkeypatch, value, on):
    """As HANDGRAD_DEVICE and HANDGRAD_BLAS_THREADS: blank means unset."""
    monkeypatch.setenv(ENV_VAR, value)
    backend = get_backend("cpu", "float64")
    model = MLP((4, 5, 3), loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    assert uses_fast_step(model, SGD(0.1), params, xp=backend.xp) is on


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
