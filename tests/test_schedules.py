"""Learning-rate schedules, early stopping and gradient clipping (model/schedules.py,
model/optimizers.clip_global_norm) in fit, Run and train.py: each schedule's rates are
its formula (and PyTorch's schedulers'), early stopping stops where a closed-form curve
says and keeps that epoch's parameters, clipping is PyTorch's clip_grad_norm_, and a
resumed run continues all three bit for bit."""

from __future__ import annotations

import json
import math

import _cli
import numpy as np
import pytest
import train
from helpers import assert_close

from backends import ConfigError, get_backend, host_rng
from model import MLP, fit, make_optimizer
from model.config import RunConfig
from model.data import load_dataset
from model.optimizers import clip_global_norm
from model.replicas import init_replicas, per_replica
from model.run import Run
from model.schedules import EarlyStopping, Schedule, plateau_reductions

EPOCHS = 30


def _formula(name: str, e: int, lr0: float, monitored=()) -> float:
    """Each schedule's rate, written out again from its documented formula."""
    if name == "step":
        return lr0 * 0.5 ** (e // 4)
    if name == "cosine":
        t = min(e, 12) / 12
        return 0.01 + (lr0 - 0.01) * 0.5 * (1 + math.cos(math.pi * t))
    if name == "invscaling":
        return lr0 * (e + 1) ** -0.25
    return lr0


SPECS = {
    "constant": Schedule("constant"),
    "step": Schedule("step", step_size=4, factor=0.5),
    "cosine": Schedule("cosine", period=12, lr_min=0.01),
    "invscaling": Schedule("invscaling", power=0.25),
}


@pytest.mark.parametrize("name", SPECS)
def test_each_schedules_rates_are_its_formula(name):
    rates = [SPECS[name].lr(e, 0.3) for e in range(EPOCHS)]
    assert rates == pytest.approx([_formula(name, e, 0.3) for e in range(EPOCHS)], rel=1e-15)


@pytest.mark.filterwarnings("ignore:Detected call of")
def _torch_rates(make, epochs, values=None):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    scheduler = make(torch.optim.lr_scheduler, opt)
    rates = []
    for e in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()  # (no gradient: nothing moves) before the scheduler, as PyTorch wants
        scheduler.step(*([] if values is None else [values[e]]))
    return rates


def test_step_and_cosine_are_pytorchs():
    step = _torch_rates(lambda s, o: s.StepLR(o, step_size=4, gamma=0.5), EPOCHS)
    assert [SPECS["step"].lr(e, 0.3) for e in range(EPOCHS)] == pytest.approx(step, rel=1e-12)
    cosine = _torch_rates(lambda s, o: s.CosineAnnealingLR(o, T_max=12, eta_min=0.01), 13)
    assert [SPECS["cosine"].lr(e, 0.3) for e in range(13)] == pytest.approx(cosine, rel=1e-12)
    assert SPECS["cosine"].lr(20, 0.3) == 0.01  # after its period: lr_min


def test_plateau_is_pytorchs_reduce_on_plateau():
    """A constructed loss curve: falls, stalls, falls by less than the threshold, rises."""
    values = [1.0, 0.8, 0.8, 0.8, 0.79, 0.7, 0.7, 0.71, 0.72, 0.73, 0.6, 0.61, 0.62, 0.63, 0.64]
    spec = Schedule("plateau", factor=0.5, patience=2, threshold=0.02, lr_min=0.05)
    ours = [spec.lr(e, 0.3, values[:e]) for e in range(len(values))]
    theirs = _torch_rates(
        lambda s, o: s.ReduceLROnPlateau(o, mode="min", factor=0.5, patience=2, threshold=0.02,
                                         threshold_mode="abs", min_lr=0.05),
        len(values), values,
    )  # fmt: skip
    assert ours == pytest.approx(theirs, rel=1e-12)
    # by hand: bad epochs 2, 3, 4 (0.79 is not below 0.8 - 0.02): a reduction after v_4;
    # then 6, 7, 8 after the best 0.7, and 11, 12, 13 after 0.6: 0.3 / 8 under the floor
    assert [plateau_reductions(values[:e], 2, 0.02) for e in (4, 5, 9, 13, 14)] == [0, 1, 2, 2, 3]
    assert (ours[4], ours[9], ours[14]) == (0.3, 0.075, 0.05)


def _regression(b, n=64):
    X, y = load_dataset("regression")
    return b.asarray(X[:n]), b.asarray(y[:n, None])


@pytest.mark.parametrize("name", ["step", "cosine", "invscaling"])
def test_fit_steps_with_the_scheduled_rate_and_records_it(name):
    """Full-batch SGD: fit with a schedule equals one-epoch fits at each formula rate."""
    b = get_backend("cpu", "float64")
    X, y = _regression(b)
    model = MLP((X.shape[1], 8, 1), activation="tanh", loss="mse")
    scheduled = model.init_params(b, host_rng(0))
    result = fit(model, scheduled, X, y, optimizer=make_optimizer("sgd", 0.3), epochs=10,
                 schedule=SPECS[name])  # fmt: skip
    by_hand = model.init_params(b, host_rng(0))
    for e in range(10):
        fit(model, by_hand, X, y, optimizer=make_optimizer("sgd", _formula(name, e, 0.3)), epochs=1)
    for k in by_hand:
        assert_close(scheduled[k], by_hand[k], 1e-13, 1e-15)
    assert result.history["lr"] == pytest.approx([_formula(name, e, 0.3) for e in range(10)])


def test_fit_plateau_follows_the_validation_loss_as_pytorch_would():
    """The rates fit records are ReduceLROnPlateau's fed the validation losses it
    recorded."""
    b = get_backend("cpu", "float64")
    X, y = _regression(b, n=200)
    model = MLP((X.shape[1], 16, 1), activation="tanh", loss="mse")
    params = model.init_params(b, host_rng(0))
    spec = Schedule("plateau", factor=0.5, patience=1, threshold=1e-3)
    result = fit(model, params, X[:150], y[:150], optimizer=make_optimizer("sgd", 0.5),
                 epochs=30, batch_size=10, rng=host_rng(0), validation=(X[150:], y[150:]),
                 schedule=spec)  # fmt: skip
    history = result.history
    theirs = _torch_rates(
        lambda s, o: s.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=1e-3,
                                         threshold_mode="abs"),
        30, history["val_loss"],
    )  # fmt: skip
    assert history["lr"] == pytest.approx([0.5 / 0.3 * r for r in theirs], rel=1e-12)
    assert len(set(history["lr"])) > 2


def test_constant_schedule_records_lr_and_changes_nothing():
    b = get_backend("cpu", "float64")
    X, y = _regression(b)
    model = MLP((X.shape[1], 8, 1), loss="mse")
    runs = []
    for schedule in (None, Schedule("constant")):
        params = model.init_params(b, host_rng(0))
        result = fit(model, params, X, y, optimizer=make_optimizer("adam", 0.01), epochs=4,
                     batch_size=16, rng=host_rng(1), schedule=schedule)  # fmt: skip
        runs.append((params, result.history))
    for k in runs[0][0]:
        np.testing.assert_array_equal(b.to_numpy(runs[0][0][k]), b.to_numpy(runs[1][0][k]))
    assert runs[0][1] == runs[1][1] and runs[0][1]["lr"] == [0.01] * 4


# ---------------------------------------------------------------------------- early stopping


def test_early_stopping_on_a_constructed_curve():
    """Keras's rule by hand: best 3.0 at epoch 2; 3.05 is not below 3.0 - 0.1; the wait
    reaches 3 after epoch 5."""
    values = [5.0, 4.0, 3.0, 2.95, 3.2, 3.05, 1.0]
    progress = EarlyStopping(3, min_delta=0.1).scan(values)
    assert (progress.best_epoch, progress.best, progress.wait) == (2, 3.0, 3)
    assert progress.stopped
    assert not EarlyStopping(4, min_delta=0.1).scan(values).stopped
    assert EarlyStopping(2).scan([1.0, math.nan, math.nan]).stopped  # NaN never improves


def _line(b, lr):
    """w x fitted to 2x by full-batch gradient descent from w = 0, scored against x:
    w_e = 2 (1 - q^e), q = 1 - 2 lr E[x^2]; the validation loss E[x^2] (w_e - 1)^2 is
    least where q^e is nearest 1/2."""
    x = np.linspace(-1, 1, 21)[:, None]
    m2 = float(np.mean(x * x))
    q = 1 - 2 * lr * m2
    model = MLP((1, 1), loss="mse", bias=False)
    return model, b.asarray(x), b.asarray(2 * x), b.asarray(x), q


@pytest.mark.parametrize("patience", [1, 2, 4])
def test_fit_stops_at_the_expected_epoch_and_keeps_the_best(patience):
    b = get_backend("cpu", "float64")
    lr = 0.2 / (2 * float(np.mean(np.linspace(-1, 1, 21) ** 2)))  # q = 0.8
    model, X, Y, Y_val, q = _line(b, lr)
    w = [2 * (1 - q**e) for e in range(1, 40)]
    val = [(we - 1) ** 2 for we in w]
    best = int(np.argmin(val))  # epoch 3 (from 1): q^3 = 0.512
    assert best == 2
    params = model.init_params(b, host_rng(0), init="zeros")
    result = fit(model, params, X, Y, optimizer=make_optimizer("gd", lr), epochs=39,
                 validation=(X, Y_val), early_stopping=EarlyStopping(patience))  # fmt: skip
    assert result.best_epoch == best + 1 and result.stopped
    assert len(result.history["loss"]) == best + 1 + patience  # stopped after the wait
    assert float(b.to_numpy(params["W1"])[0, 0]) == pytest.approx(w[best], rel=1e-12)
    assert float(b.to_numpy(result.last["W1"])[0, 0]) == pytest.approx(w[best + patience])


def test_replicas_stop_on_their_own_and_are_their_single_fits():
    b = get_backend("cpu", "float64")
    X, y = load_dataset("digits")
    X, y = b.asarray(X[:300]), b.asarray(y[:300], dtype=b.xp.int64)
    val = (X[200:], y[200:])
    X, y = X[:200], y[:200]
    model = MLP((64, 32, 10), loss="cross_entropy")
    patience = [1, 3, None]
    singles = []
    for seed, p in enumerate(patience):
        params = model.init_params(b, host_rng(seed))
        result = fit(model, params, X, y, optimizer=make_optimizer("adam", 0.05), epochs=25,
                     batch_size=32, rng=host_rng(seed), validation=val,
                     early_stopping=None if p is None else EarlyStopping(p))  # fmt: skip
        singles.append((params, result))
    stacked = init_replicas(model, b, [host_rng(s) for s in range(3)])
    stoppers = [None if p is None else EarlyStopping(p) for p in patience]
    result = fit(model, stacked, X, y, optimizer=make_optimizer("adam", 0.05), epochs=25,
                 batch_size=32, rng=[host_rng(s) for s in range(3)], validation=val,
                 early_stopping=stoppers)  # fmt: skip
    assert singles[0][1].stopped and len(singles[0][1].history["loss"]) < 25
    for r, (params, single) in enumerate(singles):
        assert result.history[r]["loss"] == pytest.approx(single.history["loss"], rel=1e-12)
        for k in params:
            assert_close(stacked[k][r], params[k], 1e-12, 1e-14)
    assert result.best_epoch[:2] == [s.best_epoch for _, s in singles[:2]]
    assert result.stopped[:2] == [True, True] and result.best_epoch[2] is None


def test_fit_refuses_to_continue_early_stopping_without_its_past():
    b = get_backend("cpu", "float64")
    X, y = _regression(b)
    model = MLP((X.shape[1], 1), loss="mse")
    params = model.init_params(b, host_rng(0))
    with pytest.raises(ConfigError, match="pass their history"):
        fit(model, params, X, y, optimizer=make_optimizer("gd"), epochs=4, start_epoch=2,
            early_stopping=EarlyStopping(2))  # fmt: skip
    first = fit(model, params, X, y, optimizer=make_optimizer("gd"), epochs=2,
                early_stopping=EarlyStopping(2))  # fmt: skip
    state = {k: v for k, v in first.state.items() if k != "best"}
    with pytest.raises(ConfigError, match="best parameters"):
        fit(model, params, X, y, optimizer=make_optimizer("gd"), epochs=4, start_epoch=2,
            early_stopping=EarlyStopping(2), history=first.history, state=state)  # fmt: skip


# ---------------------------------------------------------------------------- clipping


def test_clip_global_norm_is_pytorchs_clip_grad_norm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3), "W2": rng.normal(size=(3, 2))}
    b = get_backend("cpu", "float64")
    for c in (0.1, 1.0, 100.0):
        tensors = [torch.tensor(g, requires_grad=True) for g in grads.values()]
        for t, g in zip(tensors, grads.values(), strict=True):
            t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(tensors, c)
        ours = clip_global_norm({k: b.asarray(v) for k, v in grads.items()}, c, stacked=False,
                                xp=b.xp)  # fmt: skip
        for t, k in zip(tensors, grads, strict=True):
            assert_close(ours[k], t.grad.numpy(), 1e-6)  # PyTorch adds 1e-6 to the norm
        # with the learning rate folded in (SGD's G = lr g), the true gradient's norm
        scaled = clip_global_norm({k: b.asarray(0.3 * v) for k, v in grads.items()}, c, 0.3,
                                  stacked=False, xp=b.xp)  # fmt: skip
        for k in grads:
            assert_close(scaled[k], 0.3 * b.to_numpy(ours[k]), 1e-13)


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_fit_clips_each_steps_gradient(optimizer):
    """One full-batch step by hand: p - lr g min(1, c / ||g||) (gd); Adam's first step
    moves each weight by lr whatever the gradient's size, so clipping changes it by the
    norm only through eps: compare with its own update of the clipped gradient."""
    b = get_backend("cpu", "float64")
    X, y = _regression(b)
    model = MLP((X.shape[1], 4, 1), activation="tanh", loss="mse")
    params = model.init_params(b, host_rng(0))
    _, cache = model.forward(params, X, train=True)
    g = model.backward(params, cache, y)
    norm = math.sqrt(sum(float(b.xp.sum(v * v)) for v in g.values()))
    c = norm / 3
    opt = make_optimizer(optimizer, 0.1)
    expected = dict(params)
    clipped = {k: v * (c / norm) for k, v in g.items()}
    expected, _ = opt.update(
        {k: b.xp.asarray(v, copy=True) for k, v in params.items()}, clipped,
        opt.init({k: params[k] for k in model.trained}), decay=model.decayed,
    )  # fmt: skip
    fit(model, params, X, y, optimizer=opt, epochs=1, clip_grad=c)
    for k in params:
        assert_close(params[k], expected[k], 1e-12, 1e-15)


def test_clip_per_replica_equals_single_fits():
    b = get_backend("cpu", "float64")
    X, y = _regression(b)
    model = MLP((X.shape[1], 6, 1), activation="tanh", loss="mse")
    clips, lrs = [0.05, None, 0.5], [0.1, 0.2, 0.3]
    singles = []
    for seed, (c, lr) in enumerate(zip(clips, lrs, strict=True)):
        params = model.init_params(b, host_rng(seed))
        fit(model, params, X, y, optimizer=make_optimizer("sgd", lr), epochs=3, batch_size=16,
            rng=host_rng(seed), clip_grad=c)  # fmt: skip
        singles.append(params)
    stacked = init_replicas(model, b, [host_rng(s) for s in range(3)])
    opt = per_replica(make_optimizer("sgd"), lr=lrs, like=stacked["W1"])
    fit(model, stacked, X, y, optimizer=opt, epochs=3, batch_size=16,
        rng=[host_rng(s) for s in range(3)], clip_grad=clips)  # fmt: skip
    for r, params in enumerate(singles):
        for k in params:
            assert_close(stacked[k][r], params[k], 1e-12, 1e-15)


# ---------------------------------------------------------------------------- runs


def _config(**kwargs):
    base = dict(dataset="digits", hidden=(16,), optimizer="sgd", lr=0.1, batch_size=64,
                epochs=8, dtype="float64", seed=3)  # fmt: skip
    return RunConfig(**{**base, **kwargs})


def _arrays(folder):
    with np.load(folder / "checkpoint.npz") as f:
        return {k: f[k] for k in f.files}


RESUMED = {
    "step": {"schedule": "step", "lr_step_size": 2, "lr_factor": 0.5},
    "cosine": {"schedule": "cosine", "lr_min": 0.001, "lr_period": 8},
    "invscaling": {"schedule": "invscaling", "lr_power": 0.7},
    "plateau": {"schedule": "plateau", "lr_patience": 0, "lr_threshold": 0.25, "lr_factor": 0.5},
    "early-stopping": {"early_stopping": 2, "min_delta": 0.01, "lr": 0.8},
    "clip": {"clip_grad": 0.05},
    "lbfgs": {"optimizer": "lbfgs", "lr": 1.0, "batch_size": None, "early_stopping": 2},
}


@pytest.mark.parametrize("case", RESUMED)
def test_a_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path, case):
    config = _config(**RESUMED[case])
    whole = Run.start(config, tmp_path / "whole", checkpoint_every=100)
    expected = whole.train("cpu")
    part = Run.start(dataclasses_replace(config, epochs=3), tmp_path / "part")
    part.train("cpu")
    resumed = Run.resume(tmp_path / "part", epochs=8).train("cpu")
    a, c = _arrays(tmp_path / "whole"), _arrays(tmp_path / "part")
    assert a.keys() == c.keys()
    for k in a:
        if k != "meta":
            np.testing.assert_array_equal(a[k], c[k])
    assert resumed["metrics"]["history"] == expected["metrics"]["history"]
    assert resumed["metrics"]["training"] == expected["metrics"]["training"]
    assert resumed.get("early_stopping") == expected.get("early_stopping")
    if "schedule" in RESUMED[case]:
        lrs = expected["metrics"]["history"]["lr"]
        assert len(set(lrs)) > 1  # the rate did change, before and after the break
    meta_a = json.loads(str(a["meta"]))["training"]
    meta_c = json.loads(str(c["meta"]))["training"]
    assert meta_a.get("optimizer_state") == meta_c.get("optimizer_state")


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_cosine_keeps_its_period_when_a_resume_adds_epochs(tmp_path):
    Run.start(_config(schedule="cosine"), tmp_path / "r").train("cpu")
    summary = Run.resume(tmp_path / "r", epochs=12).train("cpu")
    lrs = summary["metrics"]["history"]["lr"]
    assert summary["config"]["lr_period"] == 8
    assert lrs[:8] == pytest.approx([Schedule("cosine", period=8).lr(e, 0.1) for e in range(8)])
    assert lrs[8:] == [0.0] * 4


def _noise_file(tmp_path):
    """Labels with nothing to learn: the validation loss rises once the net memorizes."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.npz"
    np.savez(path, X=rng.normal(size=(80, 10)), y=rng.integers(0, 2, 80))
    return path


def test_an_early_stopped_run_saves_its_best_epoch(tmp_path):
    """The model file and the run's model hold the best epoch's parameters: those of the
    same run trained for exactly that many epochs; metrics.json names the epoch."""
    base = dict(data=str(_noise_file(tmp_path)), hidden=(64,), optimizer="adam", lr=0.05,
                batch_size=16, epochs=60, dtype="float64", val_split=0.5)  # fmt: skip
    run = Run.start(RunConfig(**base, early_stopping=3), tmp_path / "es",
                    save=tmp_path / "es.npz")  # fmt: skip
    summary = run.train("cpu")
    stop = summary["early_stopping"]
    best = stop["best_epoch"]
    assert stop["stopped"] and stop["monitor"] == "val_loss" and summary["status"] == "completed"
    assert summary["epochs"] == best + 3 < 60
    val = summary["metrics"]["history"]["val_loss"]
    assert int(np.argmin(val)) + 1 == best
    assert summary["metrics"]["validation"]["loss"] == val[best - 1]
    Run.start(RunConfig(**{**base, "epochs": best}), tmp_path / "short",
              save=tmp_path / "short.npz").train("cpu")  # fmt: skip
    with np.load(tmp_path / "es.npz") as es, np.load(tmp_path / "short.npz") as short:
        for k in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(es[k], short[k])
    from model.trained import TrainedModel

    from_folder = TrainedModel.load(tmp_path / "es")  # the checkpoint's model: the best
    np.testing.assert_array_equal(from_folder.params["W1"], run.trained_model().params["W1"])
    with np.load(tmp_path / "es.npz") as es:
        np.testing.assert_array_equal(from_folder.params["W1"], es["W1"])
    again = Run.resume(tmp_path / "es", epochs=80).train("cpu")  # stopped: nothing to add
    assert again["epochs"] == summary["epochs"]


# ---------------------------------------------------------------------------- train.py


def _cli_run(capsys, *argv):
    rc = _cli.run(train.main, list(argv), train.FLAGS)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_schedule_early_stopping_and_clipping_are_recorded(capsys, tmp_path):
    out = tmp_path / "r"
    rc, stdout, err = _cli_run(
        capsys, "--device", "cpu", "--data", str(_noise_file(tmp_path)), "--hidden", "64",
        "--lr", "0.05", "--batch-size", "16", "--epochs", "40", "--val-split", "0.5",
        "--schedule", "step", "--lr-step-size", "3", "--lr-factor", "0.5",
        "--early-stopping", "3", "--min-delta", "0.001", "--clip-grad", "5", "--json",
        "--out", str(out),
    )  # fmt: skip
    assert rc == 0, err
    result = json.loads(stdout)
    assert result == json.loads((out / "metrics.json").read_text())
    config = result["config"]
    assert (config["schedule"], config["lr_step_size"], config["lr_factor"]) == ("step", 3, 0.5)
    assert (config["early_stopping"], config["min_delta"], config["clip_grad"]) == (3, 0.001, 5.0)
    lrs = result["metrics"]["history"]["lr"]
    assert lrs == [0.05 * 0.5 ** (e // 3) for e in range(len(lrs))]
    assert result["early_stopping"]["stopped"] and result["epochs"] < 40
    assert set(result["metrics"]["training"]) == {"loss", "accuracy"}


def test_cli_resume_mid_schedule_is_bit_identical(capsys, tmp_path):
    """10 epochs of cosine, against 5 then --resume to 10: the same parameters, history
    (rates included) and scores."""
    common = ["--device", "cpu", "--dataset", "iris", "--hidden", "8", "--optimizer", "sgd",
              "--batch-size", "16", "--dtype", "float64", "--quiet", "--schedule", "cosine",
              "--lr-min", "0.01", "--lr-period", "10"]  # fmt: skip
    whole, short = tmp_path / "whole", tmp_path / "short"
    assert _cli_run(capsys, *common, "--epochs", "10", "--out", str(whole))[0] == 0
    assert _cli_run(capsys, *common, "--epochs", "5", "--out", str(short))[0] == 0
    rc, _, err = _cli_run(capsys, "--resume", str(short), "--epochs", "10", "--device", "cpu",
                          "--quiet")  # fmt: skip
    assert rc == 0, err
    ref = json.loads((whole / "metrics.json").read_text())["metrics"]
    got = json.loads((short / "metrics.json").read_text())["metrics"]
    assert got == ref and len(set(ref["history"]["lr"])) == 10
    with np.load(whole / "checkpoint.npz") as fa, np.load(short / "checkpoint.npz") as fs:
        for k in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(fa[k], fs[k])


def test_a_sweep_of_schedules_stopping_and_clipping_is_its_single_runs(tmp_path):
    """Each replica of a sweep over schedule, early stopping and clipping trains as the
    single run with its values: history (rates included), best epoch, model."""
    from model.sweep import load_sweep

    base = dict(data=str(_noise_file(tmp_path)), hidden=(32,), optimizer="adam", lr=0.05,
                batch_size=16, epochs=30, dtype="float64", val_split=0.5)  # fmt: skip
    sweep = {"schedule": ["constant", "invscaling"], "early_stopping": [2, 5],
             "clip_grad": [0.5]}  # fmt: skip
    summary = Run.start(RunConfig(**base), tmp_path / "sweep", sweep=sweep).train("cpu")
    sweep_models = load_sweep(tmp_path / "sweep")
    for entry in summary["replicas"]:
        values = {k: entry[k] for k in sweep}
        single = Run.start(RunConfig(**base, **values), tmp_path / f"r{entry['replica']}")
        expected = single.train("cpu")
        history = expected["metrics"]["history"]
        assert entry["history"].keys() == history.keys()
        for k, v in history.items():
            assert entry["history"][k] == pytest.approx(v, rel=1e-12)
        assert entry["best_epoch"] == expected["early_stopping"]["best_epoch"]
        model = sweep_models.models[entry["replica"]]
        for k, v in single.trained_model().params.items():
            assert_close(model.params[k], v, 1e-11, 1e-13)
    assert {len(e["history"]["loss"]) for e in summary["replicas"]} != {30}  # some stopped


def test_cli_sweep_of_lbfgs(capsys, tmp_path):
    out = tmp_path / "s"
    rc, stdout, err = _cli_run(
        capsys, "--device", "cpu", "--dataset", "iris", "--hidden", "8", "--optimizer", "lbfgs",
        "--epochs", "15", "--sweep", "weight-decay=0,0.01", "--sweep", "seed=0,1", "--json",
        "--out", str(out), "--save", str(tmp_path / "best.npz"),
    )  # fmt: skip
    assert rc == 0, err
    result = json.loads(stdout)
    assert len(result["replicas"]) == 4 and result["diverged"] == 0
    for entry in result["replicas"]:
        losses = entry["history"]["loss"]
        if entry["weight_decay"] == 0:
            assert losses[-1] <= losses[0]
        assert entry["history"]["lr"] == [1.0] * 15
    assert (tmp_path / "best.npz").is_file()
