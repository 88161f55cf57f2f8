"""Sweeps (model/sweep.py, train.py --sweep): each replica against the separate run with its
settings, the run folder's files, resume, and bad input."""

from __future__ import annotations

import dataclasses
import json

import _cli
import export
import numpy as np
import predict
import pytest
import train

from backends import get_backend
from backends.errors import ConfigError
from model.checkpoint import CheckpointError
from model.config import RunConfig
from model.run import Run
from model.sweep import choose_replica, load_sweep_checkpoint
from model.trained import TrainedModel, load_checkpoint

SMALL = {"dataset": "iris", "hidden": (6,), "batch_size": 16, "optimizer": "momentum",
         "dtype": "float64", "standardize": True, "epochs": 4}  # fmt: skip


def _params_of(folder):
    return load_checkpoint(folder / "checkpoint.npz")[0].params


def _separate(tmp_path, name, **settings):
    """The single run a replica stands for, through the same library as every run."""
    config = RunConfig(**{**SMALL, **settings})
    summary = Run.start(config, tmp_path / name).train(get_backend("cpu", "float64"))
    return load_checkpoint(tmp_path / name / "checkpoint.npz")[0].params, summary


def test_each_replica_of_a_sweep_equals_its_separate_run(tmp_path):
    """lr x weight decay on a shared split: parameters, history and validation scores of
    a replica equal the Run with its settings (float64, shuffled minibatches)."""
    grid = {"lr": [0.05, 0.3], "weight_decay": [0.0, 0.02]}
    sweep = Run.start(RunConfig(**SMALL), tmp_path / "s", sweep=grid, save_all=tmp_path / "all")
    summary = sweep.train(get_backend("cpu", "float64"))
    assert [(r["lr"], r["weight_decay"]) for r in summary["replicas"]] == [
        (0.05, 0.0), (0.05, 0.02), (0.3, 0.0), (0.3, 0.02)]  # fmt: skip
    for r, entry in list(enumerate(summary["replicas"]))[1:3]:  # lr and decay both differ
        params, single = _separate(tmp_path, f"r{r}", lr=entry["lr"],
                                   weight_decay=entry["weight_decay"])  # fmt: skip
        saved = TrainedModel.load(summary["paths"]["models"][r]).params
        for k in params:
            np.testing.assert_allclose(saved[k], params[k], rtol=1e-12)
        np.testing.assert_allclose(entry["history"]["loss"], single["metrics"]["history"]["loss"],
                                   rtol=1e-12)  # fmt: skip
        for k, v in single["metrics"]["validation"].items():
            np.testing.assert_allclose(entry["validation"][k], v, rtol=1e-12)
    accuracy = [(e["validation"]["accuracy"], -e["validation"]["loss"]) for e in
                summary["replicas"]]  # fmt: skip
    assert summary["best"]["replica"] == accuracy.index(max(accuracy))
    assert summary["best"]["by"] == "val_accuracy"


def test_cli_seed_sweep_marks_the_diverged_and_saves_the_best(tmp_path, capsys):
    """--sweep seed x lr without a split (so every seed's run has the same rows): the
    lr 1e10 replicas diverge, are marked, and keep their last finite epoch, as the
    separate runs keep it; the others equal their separate runs; --save is the best."""
    argv = ["--device", "cpu", "--dataset", "iris", "--hidden", "6", "--batch-size", "16",
            "--optimizer", "sgd", "--dtype", "float64", "--standardize", "--epochs", "6",
            "--val-split", "0"]  # fmt: skip
    out = tmp_path / "s"
    with np.errstate(all="ignore"):
        rc = _cli.run(train.main, [*argv, "--sweep", "seed=0,1", "--sweep", "lr=0.1,1e10",
                                   "--out", str(out), "--save", str(tmp_path / "best.npz"),
                                   "--quiet"], train.FLAGS)  # fmt: skip
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "4 replicas | 6 epochs" in stdout and "2 diverged" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {p.name for p in out.iterdir()} == {"metrics.json", "loss.png", "checkpoint.npz"}
    assert [r["status"] for r in metrics["replicas"]] == ["trained", "diverged"] * 2
    assert metrics["sweep"] == {"seed": [0, 1], "lr": [0.1, 1e10]}
    stacked = load_sweep_checkpoint(out / "checkpoint.npz")[0].params  # every replica's
    for r, entry in enumerate(metrics["replicas"]):
        with np.errstate(all="ignore"):
            rc = _cli.run(train.main, [*argv, "--seed", str(entry["seed"]), "--lr",
                                       str(entry["lr"]), "--out", str(tmp_path / f"r{r}"),
                                       "--json"], train.FLAGS)  # fmt: skip
        single = json.loads(capsys.readouterr().out or "{}")
        params = load_checkpoint(tmp_path / f"r{r}" / "checkpoint.npz")[0].params
        for k, p in params.items():
            np.testing.assert_allclose(stacked[k][r], p, rtol=1e-12)
        if entry["status"] == "diverged":
            assert rc == 2
            info = load_checkpoint(tmp_path / f"r{r}" / "checkpoint.npz")[1]
            assert entry["diverged_at_epoch"] == info["epoch"] + 1
        else:
            assert entry["final_train_loss"] == pytest.approx(single["final_train_loss"],
                                                              rel=1e-12)  # fmt: skip
    best = min((e["final_train_loss"], e["replica"]) for e in metrics["replicas"]
               if e["status"] == "trained")[1]  # fmt: skip
    values = {k: metrics["replicas"][best][k] for k in ("seed", "lr")}
    assert metrics["best"] == {"replica": best, "by": "loss", **values}
    saved = TrainedModel.load(tmp_path / "best.npz").params
    for k in saved:
        np.testing.assert_array_equal(saved[k], stacked[k][best])
    with pytest.raises(CheckpointError, match="holds a sweep"):
        TrainedModel.load(out / "checkpoint.npz")
    rc = _cli.run(export.main, [str(out), "--replica", "all", "--out", str(tmp_path / "all")])
    assert rc == 0 and "diverged, at their last finite epoch: 1, 3" in capsys.readouterr().err
    entry = metrics["replicas"][1]  # lr 1e10: diverged; export says so
    rc = _cli.run(export.main, [str(out), "--replica", "1", "--out", str(tmp_path / "d.npz")])
    assert rc == 0
    assert f"diverged in epoch {entry['diverged_at_epoch']}: its last finite epoch" in (
        capsys.readouterr().err
    )


def test_a_resumed_sweep_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
    cpu = get_backend("cpu", "float64")
    values = {"seed": [2, 3], "lr": [0.1, 0.02]}
    config = RunConfig(**{**SMALL, "optimizer": "adam", "epochs": 6})
    Run.start(config, sweep=values, run_dir=tmp_path / "a").train(cpu)
    Run.start(dataclasses.replace(config, epochs=3), tmp_path / "b", sweep=values).train(cpu)
    resumed = Run.resume(tmp_path / "b", epochs=6)
    assert resumed.epoch == 3
    resumed.train(cpu)
    a = load_sweep_checkpoint(tmp_path / "a" / "checkpoint.npz")[0].params
    for k, p in resumed.params.items():
        np.testing.assert_array_equal(p, a[k])
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["replicas"][3]["history"]
    assert len(history["loss"]) == 6


def test_a_sweep_not_over_lr_resumes_with_a_new_lr_for_every_replica(tmp_path):
    """Replica r of a weight decay sweep resumed with another lr equals the separate run
    of its decay resumed with that lr; a sweep over lr keeps its own."""
    cpu = get_backend("cpu", "float64")
    config = RunConfig(**{**SMALL, "epochs": 2})
    Run.start(config, tmp_path / "s", sweep={"weight_decay": [0.0, 0.02]}).train(cpu)
    sweep = Run.resume(tmp_path / "s", epochs=4, lr=0.02)
    assert [sweep.replica_config(r).lr for r in range(2)] == [0.02, 0.02]
    sweep.train(cpu)
    Run.start(dataclasses.replace(config, weight_decay=0.02), tmp_path / "one").train(cpu)
    Run.resume(tmp_path / "one", epochs=4, lr=0.02).train(cpu)
    one = _params_of(tmp_path / "one")
    for k, p in sweep.params.items():
        np.testing.assert_allclose(p[1], one[k], rtol=1e-12)
    Run.start(config, tmp_path / "lr", sweep={"lr": [0.1, 0.2]}).train(cpu)
    with pytest.raises(ConfigError, match="this sweep is over lr: its replicas' learning rates"):
        Run.resume(tmp_path / "lr", epochs=4, lr=0.02)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--sweep", "foo=1"], "unknown sweep setting 'foo'; sweep one of: lr, seed"),
        (["--sweep", "lr="], "the sweep of lr lists no values"),
        (["--sweep", "hidden=8,16"], "hidden cannot be swept"),
        (["--sweep", "activation=relu"], "activation cannot be swept"),
        (["--sweep", "lr=0.1,-1"], "lr must be a number > 0, got -1.0"),
        (["--sweep", "seed=1.5"], "the sweep of seed has a value that is not an integer"),
        (["--sweep", "lr=1", "--sweep", "lr=2"], "lr is swept twice"),
        (["--sweep", "lr"], "sweep 'lr' is not key=value"),
        (["--save-all", "x"], "--save-all saves the replicas of a sweep"),
    ],
)
def test_bad_sweeps_are_refused_in_one_line(tmp_path, capsys, flags, message):
    try:
        rc = _cli.run(train.main, ["--device", "cpu", "--out", str(tmp_path / "r"), *flags],
                      train.FLAGS)  # fmt: skip
    except SystemExit as exc:  # argparse: flags that exclude each other
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_sweep_of_one_value_is_one_replica(tmp_path):
    summary = Run.start(RunConfig(**SMALL), sweep={"lr": [0.1]}, run_dir=tmp_path / "s").train(
        get_backend("strict", "float64")
    )
    assert len(summary["replicas"]) == 1 and summary["best"]["replica"] == 0
    params, _ = _separate(tmp_path, "one", lr=0.1)
    saved = load_sweep_checkpoint(tmp_path / "s" / "checkpoint.npz")[0].params
    for k in params:
        np.testing.assert_allclose(saved[k][0], params[k], rtol=1e-12)


def test_a_finished_sweep_exports_and_predicts_with_any_replica(tmp_path, capsys):
    """export.py writes the best replica (the one metrics.json names), one by index, or
    all; predict.py uses the best unless told; each equals that replica's slice of the
    sweep's checkpoint. A replica out of range, or one asked of a single model, is one
    error line."""
    out = tmp_path / "s"
    sweep = Run.start(RunConfig(**SMALL), sweep={"lr": [0.01, 0.3], "seed": [0, 1]}, run_dir=out)
    best = sweep.train(get_backend("cpu", "float64"))["best"]["replica"]
    stacked = load_sweep_checkpoint(out / "checkpoint.npz")[0].params

    def exported(*argv):
        assert _cli.run(export.main, [str(out), *argv, "--quiet"], export.FLAGS) == 0
        return capsys.readouterr()

    exported("--out", str(tmp_path / "best.npz"))
    exported("--replica", "2", "--out", str(tmp_path / "two.npz"))
    (tmp_path / "all").mkdir()  # an earlier, larger export: its extra replica must go
    (tmp_path / "all" / "replica-7.npz").write_bytes(b"old")
    (tmp_path / "all" / "notes.txt").write_text("mine")
    exported("--replica", "all", "--out", str(tmp_path / "all"), "--overwrite")
    files = {tmp_path / "best.npz": best, tmp_path / "two.npz": 2}
    files |= {tmp_path / "all" / f"replica-{r}.npz": r for r in range(4)}
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "notes.txt", *(f"replica-{r}.npz" for r in range(4))]  # fmt: skip
    for path, r in files.items():
        for k, v in TrainedModel.load(path).params.items():
            np.testing.assert_array_equal(v, stacked[k][r])

    X = np.random.default_rng(0).normal(size=(5, 4))
    np.savez(tmp_path / "rows.npz", X=X)
    predictions = {}
    for name, source, extra in (("sweep", out, []), ("file", tmp_path / "best.npz", []),
                                ("two", out, ["--replica", "2"])):  # fmt: skip
        argv = [str(source), "--data", str(tmp_path / "rows.npz"), "--proba", "--device", "cpu"]
        assert _cli.run(predict.main, argv + extra, predict.FLAGS) == 0
        predictions[name], err = capsys.readouterr()
    assert predictions["sweep"] == predictions["file"] != predictions["two"]
    assert "sweep: predicting with replica 2 (lr=0.3, seed=0" in err and "; epoch 4 of 4)" in err
    rows = ["--data", str(tmp_path / "rows.npz"), "--device", "cpu"]
    for source, replica, message in (
        (out, "9", "replica must be 'best' or an index from 0 to 3, got '9' (--replica)"),
        (tmp_path / "best.npz", "0", "holds one model, not a sweep; leave out the replica"),
    ):  # predict checks --replica before reading any data
        assert _cli.run(predict.main, [str(source), *rows, "--replica", replica],
                        predict.FLAGS) == 2  # fmt: skip
        assert message in capsys.readouterr().err

    single = tmp_path / "single"
    Run.start(RunConfig(**SMALL), single).train(get_backend("cpu", "float64"))
    assert _cli.run(export.main, [str(single), "--out", str(tmp_path / "s.npz")]) == 0
    assert "wrote the model (epoch 4 of 4) of" in capsys.readouterr().err
    for name, init in (("i1", single), ("i2", single / "checkpoint.npz")):  # a folder too
        argv = ["--dataset", "iris", "--hidden", "6", "--epochs", "1", "--device", "cpu"]
        assert (
            _cli.run(train.main, [*argv, "--init", str(init), "--out", str(tmp_path / name)]) == 0
        )
    capsys.readouterr()
    for k, v in _params_of(tmp_path / "i1").items():
        np.testing.assert_array_equal(v, _params_of(tmp_path / "i2")[k])
    for source, argv, message in (
        (out, ["--replica", "4", "--out", "x.npz"],
         "replica must be 'best' or an index from 0 to 3, got '4' (--replica)"),
        (single, ["--replica", "0", "--out", "x.npz"],
         "holds one model, not a sweep; leave out the replica (--replica)"),
        (single, ["--replica", "all", "--out", "x"], "holds one model, not a sweep"),
        (tmp_path / "nothing", ["--out", "x.npz"], "does not exist or is not a file; give a "
         "model file (.npz), a run's checkpoint.npz or its folder (RUN)"),
        (tmp_path / "nothing", ["--replica", "all", "--out", "x"], "nothing does not exist"),
        (out, ["--replica", "all", "--out", str(tmp_path / "best.npz")],
         "is a file; every replica's model file goes into one folder"),
        (out, ["--replica", "all", "--out", str(tmp_path / "new.npz")],
         f"new.npz names a model file, but every replica's model file goes into one folder: "
         f"give a folder, e.g. {tmp_path / 'new'} (--out)"),
        (out, ["--out", str(tmp_path / "best.npz")],
         "already exists; choose another name or allow overwriting it (--overwrite)"),
    ):  # fmt: skip
        rc = _cli.run(export.main, [str(source), *argv], export.FLAGS)
        assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "new.npz").exists()


def test_every_replica_diverged_so_none_is_best():
    with pytest.raises(ConfigError, match="none is best; name one by its index"):
        choose_replica("best", 4, None)
    assert choose_replica(" 3", 4, 0) == 3 and choose_replica("best", 4, 1) == 1


def test_the_model_line_says_the_learning_rate_is_swept(tmp_path, capsys):
    argv = ["--dataset", "iris", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "s")]
    assert _cli.run(train.main, [*argv, "--sweep", "lr=0.1,0.2"], train.FLAGS) == 0
    assert "optimizer adam lr swept, float32" in capsys.readouterr().err
    argv[-1] = str(tmp_path / "t")
    assert _cli.run(train.main, [*argv, "--sweep", "seed=0,1"], train.FLAGS) == 0
    assert "optimizer adam lr 0.01, float32" in capsys.readouterr().err


def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, capsys, monkeypatch):
    """Run inside a run folder, "" would have meant ./checkpoint.npz: an unset shell
    variable must not quietly pick a model."""
    run = tmp_path / "r"
    Run.start(RunConfig(dataset="iris", hidden=(4,), epochs=1), run).train("cpu")
    (tmp_path / "x.csv").write_text("1,2,3,4\n")
    monkeypatch.chdir(run)
    for script, argv, message in (
        (export, ["", "--out", str(tmp_path / "e.npz")], "the path is empty; give a run "
         "folder, its checkpoint.npz or a model file (RUN)"),
        (predict, ["", "--data", str(tmp_path / "x.csv")], "the path is empty; give a run "
         "folder, its checkpoint.npz or a model file (MODEL)"),
        (export, [str(run), "--replica", "all", "--out", ""], "the folder for every "
         "replica's model file is empty; name a new or empty folder (--out)"),
    ):  # fmt: skip
        assert _cli.run(script.main, argv, script.FLAGS) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "e.npz").exists()
