"""Multi-label classification (bce over several outputs) and multi-output regression:
what is inferred from the targets, the scores (subset and per-label accuracy, R^2) against
scikit-learn's, every backend, files and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_close

from backends import get_backend, host_rng
from model import MLP, fit, make_optimizer
from model.checkpoint import CheckpointError
from model.config import RunConfig
from model.data import DataError
from model.files import ModelFile, load_host_params, read_model_file, write_model_file
from model.fit import evaluate
from model.preprocessing import resolve_targets
from model.replicas import init_replicas
from model.run import Run
from model.trained import TrainedModel


def _labels(n=60, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    W = rng.normal(size=(6, k))
    Y = (X @ W + rng.normal(scale=0.5, size=(n, k)) > 0).astype(np.int64)
    return X, Y


def test_a_0_1_matrix_that_is_not_one_hot_is_multi_label():
    _, Y = _labels()
    t = resolve_targets(Y)
    assert (t.loss, t.outputs, t.labels.to_json(), t.y.shape) == ("bce", 4, [0, 1], (60, 4))
    assert t.reason.startswith("inferred: y is a 0/1 matrix of 4 labels whose rows are not all")
    one_hot = np.eye(3)[[0, 1, 2, 1]]
    assert resolve_targets(one_hot).loss == "cross_entropy"
    assert (resolve_targets(one_hot, "bce").loss, resolve_targets(one_hot, "bce").outputs) == (
        "bce", 3)  # fmt: skip
    binary = resolve_targets(np.array([0, 1, 1, 0]), "bce")
    assert binary.outputs == 1 and binary.y.ndim == 1  # one label: one output, as before
    assert resolve_targets(Y.astype(float) * 0.5 + 0.25).loss == "mse"  # not 0/1: regression
    with pytest.raises(DataError, match="takes a matrix of 0s and 1s"):
        resolve_targets(Y * 2, "bce")


def test_scores_are_scikit_learns():
    """Subset accuracy is accuracy_score on the label matrix; per-label accuracy and R^2
    (uniform average over the outputs) as scikit-learn computes them."""
    from sklearn.metrics import accuracy_score, r2_score

    b = get_backend("cpu", "float64")
    X, Y = _labels()
    model = MLP((6, 5, 4), loss="bce")
    params = model.init_params(b, host_rng(0))
    fit(model, params, b.asarray(X), b.asarray(Y, dtype=b.xp.int64),
        optimizer=make_optimizer("adam", 0.05), epochs=5)  # fmt: skip
    predicted = (b.to_numpy(model.predict(params, b.asarray(X))) > 0.5).astype(int)
    scores = evaluate(model, params, b.asarray(X), b.asarray(Y, dtype=b.xp.int64))
    assert scores["accuracy"] == pytest.approx(accuracy_score(Y, predicted), abs=1e-15)
    assert scores["label_accuracy"] == pytest.approx(
        [accuracy_score(Y[:, j], predicted[:, j]) for j in range(4)], abs=1e-15)  # fmt: skip
    assert 0 < scores["accuracy"] < min(scores["label_accuracy"])  # all right is rarer

    regression = MLP((6, 5, 3), loss="mse", activation="tanh")
    params = regression.init_params(b, host_rng(1))
    T = X[:, :3] * 2 + 1
    T[:, 2] = 3.0  # a constant column: SS_tot = 0
    scores = evaluate(regression, params, b.asarray(X), b.asarray(T))
    out = b.to_numpy(regression.predict(params, b.asarray(X)))
    assert scores["r2"] == pytest.approx(r2_score(T, out), abs=1e-12)
    trained = TrainedModel(regression, {k: b.to_numpy(v) for k, v in params.items()}, "float64")
    assert trained.evaluate(X, T)["r2"] == pytest.approx(r2_score(T, out), abs=1e-12)


def test_replicas_score_each_replica():
    from sklearn.metrics import r2_score

    b = get_backend("cpu", "float64")
    X, Y = _labels()
    model = MLP((6, 5, 4), loss="mse")
    stacked = init_replicas(model, b, [host_rng(s) for s in range(3)])
    T = b.asarray(Y.astype(np.float64))
    scores = evaluate(model, stacked, b.asarray(X), T)
    for r in range(3):
        out = b.to_numpy(model.predict({k: v[r] for k, v in stacked.items()}, b.asarray(X)))
        assert scores["r2"][r] == pytest.approx(r2_score(Y, out), abs=1e-12)
    labels = MLP((6, 5, 4), loss="bce")
    stacked = init_replicas(labels, b, [host_rng(s) for s in range(2)])
    scores = evaluate(labels, stacked, b.asarray(X), b.asarray(Y, dtype=b.xp.int64))
    assert len(scores["label_accuracy"]) == 2 and len(scores["label_accuracy"][0]) == 4


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_every_backend_trains_multi_label_as_numpy(backend, optimizer):
    X, Y = _labels(n=40)
    runs = []
    for be in (get_backend("cpu", "float64"), backend):
        model = MLP((6, 5, 4), loss="bce", activation="tanh")
        params = model.init_params(be, host_rng(0))
        labels = be.asarray(Y, dtype=be.xp.int64)
        result = fit(model, params, be.asarray(X), labels, optimizer=make_optimizer(optimizer),
                     epochs=4, validation=(be.asarray(X[:10]), labels[:10, ...]))  # fmt: skip
        runs.append((params, result.history))
    (p0, h0), (p1, h1) = runs
    for k in p0:
        assert_close(p1[k], p0[k], 1e-10, 1e-12)
    assert h1["val_accuracy"] == h0["val_accuracy"]


def test_a_multi_label_run_splits_resumes_and_saves(tmp_path):
    X, Y = _labels(n=80)
    np.savez(tmp_path / "labels.npz", X=X, y=Y)
    config = RunConfig(data=str(tmp_path / "labels.npz"), hidden=(8,), epochs=6, lr=0.05,
                       batch_size=16, dtype="float64", val_split=0.25)  # fmt: skip
    whole = Run.start(config, tmp_path / "whole", save=tmp_path / "whole.npz").train("cpu")
    import dataclasses

    Run.start(dataclasses.replace(config, epochs=2), tmp_path / "part").train("cpu")
    part = Run.resume(tmp_path / "part", epochs=6, save=tmp_path / "part.npz").train("cpu")
    assert part["metrics"] == whole["metrics"]
    assert whole["data"]["validation_rows"] == 20
    assert set(whole["metrics"]["validation"]) == {"loss", "accuracy", "label_accuracy"}
    assert len(whole["metrics"]["training"]["label_accuracy"]) == 4
    with np.load(tmp_path / "whole.npz") as a, np.load(tmp_path / "part.npz") as c:
        for k in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(a[k], c[k])
        assert json.loads(str(a["meta"]))["classes"] == [0, 1]
    trained = TrainedModel.load(tmp_path / "whole.npz")
    assert trained.predict(X).shape == (80, 4) and trained.predict_proba(X).shape == (80, 4)
    with pytest.raises(DataError, match=r"0/1 labels of shape \(n, 4\)"):
        trained.evaluate(X, Y[:, :3])
    with pytest.raises(DataError, match="values other than 0 and 1"):
        trained.evaluate(X, Y * 3)


def test_the_checkpoint_holds_what_lbfgs_and_early_stopping_need(tmp_path):
    """opt.g, opt.s*/y*, opt.best.*, and the host values in training.optimizer_state;
    the model the file holds (model_params, init, prediction) is the best epoch's."""
    config = RunConfig(dataset="iris", hidden=(4,), optimizer="lbfgs", epochs=6,
                       early_stopping=2, dtype="float64")  # fmt: skip
    run = Run.start(config, tmp_path / "r")
    run.train("cpu")
    path = tmp_path / "r" / "checkpoint.npz"
    with np.load(path) as f:
        names = set(f.files)
        meta = json.loads(str(f["meta"]))
    assert {"opt.g.W1", "opt.s0.W1", "opt.y9.b2", "opt.best.W1", "opt.best.b2"} <= names
    state = meta["training"]["optimizer_state"]
    assert set(state) == {"loss", "rho", "gamma", "stalled"} and len(state["rho"]) == 10
    stored = read_model_file(path)
    assert stored.state["loss"] == state["loss"] and stored.state["stalled"] is False
    np.testing.assert_array_equal(stored.model_params["W1"], stored.state["best"]["W1"])
    np.testing.assert_array_equal(load_host_params(path, stored.network)["W1"],
                                  stored.state["best"]["W1"])  # fmt: skip

    damaged = dict(meta)
    damaged["training"] = {**meta["training"], "optimizer_state": {"loss": "high"}}
    f = stored
    bad = ModelFile(f.network, f.params, f.dtype, f.standardizer, f.labels, None,
                    damaged["training"], {"step": 1, "loss": "high"})  # fmt: skip
    write_model_file(tmp_path / "bad.npz", bad)
    with pytest.raises(CheckpointError, match="its optimizer state is damaged"):
        read_model_file(tmp_path / "bad.npz")
