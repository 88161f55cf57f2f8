"""Files users wrote keep working: a model file, a run folder stopped mid-training and a
sweep folder written by handgrad before format 3 (tests/fixtures/format2, made with that
version's own code, with what it trained uninterrupted and predicted) load, resume to the
same parameters and predict the same rows; format 3 round-trips every layer; a setting a
newer version adds gets its default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import _cli
import export
import numpy as np
import predict
import pytest
import train

from backends import get_backend, host_rng
from model import MLP, Run, RunConfig, TrainedModel
from model.checkpoint import CheckpointError
from model.files import ModelFile, read_meta, read_model_file, write_model_file
from model.layers import Activation, BatchNorm, Dense, Dropout, LayerNorm
from model.network import Sequential
from model.preprocessing import LabelEncoder
from model.replicas import init_replicas
from model.sweep import load_sweep

FIXTURES = Path(__file__).parent / "fixtures" / "format2"
CLASSES = LabelEncoder(np.array([3, 7, 9]))


@pytest.fixture
def old(tmp_path):
    """A copy of the fixtures (a resume writes into its run folder)."""
    shutil.copytree(FIXTURES, tmp_path / "old")
    return tmp_path / "old"


def _params(npz) -> dict:
    with np.load(npz) as f:
        return {k: f[k] for k in f.files if k != "meta" and not k.startswith("opt.")}


def test_the_fixtures_are_format_2_and_sweep_format_1():
    versions = {
        name: (m["format"], m["format_version"])
        for name in ("model.npz", "run/checkpoint.npz", "sweep/checkpoint.npz")
        for m in [read_meta(FIXTURES / name)]
    }
    assert versions == {
        "model.npz": ("handgrad-model", 2),
        "run/checkpoint.npz": ("handgrad-model", 2),
        "sweep/checkpoint.npz": ("handgrad-sweep", 1),
    }


def test_an_old_model_file_predicts_what_it_predicted(old, capsys):
    trained = TrainedModel.load(old / "model.npz")
    rows = np.load(old / "model_rows.npy")
    expected = np.load(old / "model_predictions.npy")  # the old version's predict_proba
    np.testing.assert_allclose(trained.predict_proba(rows), expected, rtol=1e-12, atol=1e-15)
    np.save(old / "rows.npy", rows)
    assert _cli.run(predict.main, [str(old / "model.npz"), "--data", str(old / "rows.npy"),
                                   "--proba"], predict.FLAGS) == 0  # fmt: skip
    table = np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1:], expected, rtol=1e-7)  # float32 text, 9 digits


def test_an_old_run_stopped_mid_training_resumes_to_the_uninterrupted_parameters(old):
    """Stopped at epoch 7 of 12 (momentum, weight decay, minibatches, float64): resumed by
    this version, it ends where the old version's uninterrupted run ended."""
    run = Run.resume(old / "run")
    assert run.epoch == 7 and run.config.epochs == 12
    summary = run.train("cpu")
    got, want = _params(old / "run" / "checkpoint.npz"), _params(old / "run_final.npz")
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-300)
    assert len(summary["metrics"]["history"]["loss"]) == 12
    assert read_meta(old / "run" / "checkpoint.npz")["format_version"] == 3


def test_an_old_sweep_resumes_exports_and_predicts(old, capsys):
    assert _cli.run(train.main, ["--resume", str(old / "sweep"), "--device", "cpu", "--quiet"],
                    train.FLAGS) == 0  # fmt: skip
    got, want = _params(old / "sweep" / "checkpoint.npz"), _params(old / "sweep_final.npz")
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-300)
    sweep = load_sweep(old / "sweep")
    assert len(sweep.models) == 4 and sweep.epoch == sweep.epochs == 10
    out = old / "best.npz"
    assert _cli.run(export.main, [str(old / "sweep"), "--out", str(out)], export.FLAGS) == 0
    np.testing.assert_array_equal(TrainedModel.load(out).params["W1"], got["W1"][sweep.best])


def test_an_old_model_file_starts_a_new_run(old):
    config = RunConfig(dataset="wine", standardize=True, hidden=(8,), epochs=2, dtype="float64")
    run = Run.start(config, old / "new", init=old / "model.npz")
    np.testing.assert_array_equal(
        run.params["W1"], TrainedModel.load(old / "model.npz").params["W1"]
    )
    run.train("cpu")


def _every_layer() -> Sequential:
    return Sequential(
        (Dense(5, 6), BatchNorm(6), Activation("tanh"), Dropout(0.2), Dense(6, 4, "relu"),
         LayerNorm(4), Dense(4, 3, "softmax")),
        "cross_entropy",
    )  # fmt: skip


def test_format_3_round_trips_every_layer_and_a_sweeps_replicas(tmp_path):
    net = _every_layer()
    cpu = get_backend("cpu", "float64")
    one = {k: cpu.to_numpy(v) + 0.25 for k, v in net.init_params(cpu, host_rng(0)).items()}
    path = write_model_file(tmp_path / "m.npz", ModelFile(net, one, "float64", labels=CLASSES))
    back = read_model_file(path)
    assert back.network == net and back.replicas is None and back.dtype == "float64"
    for k, v in one.items():
        np.testing.assert_array_equal(back.params[k], v)
    stacked = {k: cpu.to_numpy(v) for k, v in init_replicas(net, cpu, [host_rng(1)] * 3).items()}
    path = write_model_file(
        tmp_path / "s.npz", ModelFile(net, stacked, "float64", labels=CLASSES, replicas=3)
    )
    back = read_model_file(path)
    assert back.replicas == 3 and back.params["gamma1"].shape == (3, 6)


def test_a_file_names_what_is_wrong_with_it(tmp_path):
    net = _every_layer()
    cpu = get_backend("cpu", "float64")
    params = {k: cpu.to_numpy(v) for k, v in net.init_params(cpu, host_rng(0)).items()}
    path = write_model_file(tmp_path / "m.npz", ModelFile(net, params, "float64", labels=CLASSES))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    del arrays["running_var1"]
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="has no parameter 'running_var1'"):
        read_model_file(path)


def test_a_setting_a_newer_version_adds_gets_its_default_and_an_unknown_one_is_named(old):
    stored = json.loads(str(np.load(old / "run" / "checkpoint.npz")["meta"]))["training"]
    assert "norm" not in stored["config"]  # written before the setting existed
    config = RunConfig.from_json(stored["config"], "old")
    assert (config.norm, config.dropout) == ("none", 0.0)
    with pytest.raises(CheckpointError, match=r"\(warp_drive\); it was written by a newer"):
        RunConfig.from_json({**stored["config"], "warp_drive": 9}, "new")


def test_a_resumed_old_run_keeps_its_mlp(old):
    """The network a format 2 file describes (an MLP's sizes and activations) is the one
    this version builds from the run's config: the resume does not refuse it."""
    run = Run.resume(old / "run", epochs=12)
    assert run.model == MLP((4, 6, 5, 3), activation="tanh", loss="cross_entropy")
